"""Study definitions as data: the built-in TOML files equal the definitions that were
Python code, user files are checked key by key before anything runs, and the CLI
copies a built-in definition out and runs an edited one."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from jaxstage import study as st
from jaxstage.cli import main

SNAPSHOT = Path(__file__).parent / "data" / "study_definitions_old.json"


def _old_cases() -> list[dict]:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))["cases"]


@pytest.mark.parametrize(
    "case",
    _old_cases(),
    ids=lambda c: (
        f"{c['study']}-{'default' if c.get('default') else c.get('seeds')}"
        f"-{c.get('max_exponent', '')}"
    ),
)
def test_builtin_definitions_equal_the_former_python_ones(case):
    # The snapshot is repr() of the Study that jaxstage/study.py built before the
    # definitions became TOML (git d7d4948): every field, int against float included.
    if case.get("default"):
        study = st.quick_study() if case["study"] == "quick" else st.full_study()
    elif case["study"] == "quick":
        study = st.quick_study(case["seeds"])
    else:
        study = st.full_study(case["seeds"], case["max_exponent"])
    former = tuple(e for e in study.experiments if e.name not in ADDED_SINCE)
    # Fields added since, at their defaults, are no change to the former definitions.
    text = repr(dataclasses.replace(study, experiments=former))
    for added in (", sharing='shared'", ", learner='stage'", ", explore_prob=None, eta=None"):
        text = text.replace(added, "")
    assert text == case["repr"]


#: Experiments added to the built-in definitions after the snapshot (checked below).
ADDED_SINCE = frozenset(
    {
        "mean_field_congestion",
        "mean_field_beauty_contest",
        "mean_field_adoption",
        "mean_field_random_linear",
        "congestion_private_info",
        "learners_congestion",
        "learners_beauty_contest",
        "learners_adoption",
        "learners_random_linear_potential",
    }
)


def test_the_mean_field_experiments_rerun_one_setting_of_each_c5_game():
    full = {e.name: e for e in st.full_study().experiments}
    bases = {
        "mean_field_congestion": "congestion_core",
        "mean_field_beauty_contest": "beauty_contest",
        "mean_field_adoption": "adoption",
        "mean_field_random_linear": "random_linear_potential",
    }
    assert set(bases) == {n for n in ADDED_SINCE if n.startswith("mean_field_")}
    for name, base_name in bases.items():
        exp, base = full[name], full[base_name]
        assert exp.claims == ("C2", "C5")
        assert (exp.game, exp.game_params, exp.stage_lengths) == (
            base.game,
            base.game_params,
            base.stage_lengths,
        )
        assert exp.explore_prob == base.explore_prob
        assert set(exp.update_probs) <= set(base.update_probs) and len(exp.update_probs) == 1
        assert exp.populations == tuple(10**e for e in range(2, 7))
        assert exp.round_budget == base.round_budget // 2


def test_hand_checked_fields():
    full = {e.name: e for e in st.full_study().experiments}
    assert full["congestion_core"].populations == tuple(10**e for e in range(2, 8))
    assert full["congestion_tau_search"].populations == tuple(10**e for e in range(2, 7))
    assert full["congestion_tau_search_large"].populations == (10**7,)
    assert full["congestion_info_large"].populations == (10**6, 10**7)
    assert full["minority_smooth_oscillation"].game_params == {"smoothness": 0.1}
    assert full["minority_oscillation"].update_probs == (1.0, 0.1)
    assert isinstance(full["minority_oscillation"].update_probs[0], float)
    labels = [v.label for v in full["congestion_noisy_info"].variants]
    assert labels[2] == "distribution m=10000" and labels[3] == "distribution std=0.001"
    quick = {e.name: e for e in st.quick_study(seeds=4).experiments}
    assert st.quick_study(seeds=4).seeds == 4
    none = quick["congestion_info"].variants[0]
    assert (none.label, none.stage_lengths, none.update_probs) == ("none", (100,), (0.1,))
    assert quick["congestion_core"].variants == (st.InfoVariant("none"),)
    assert quick["congestion_noisy_info"].baseline == "congestion_info"


def test_load_study_overrides_and_drops_what_max_exponent_empties():
    assert st.load_study("full") == st.full_study()
    assert st.load_study("quick", seeds=3) == st.quick_study(3)
    assert st.load_study("full", seeds=None).seeds == 10  # None keeps the file's value
    small = st.load_study("full", max_exponent=5)
    assert all(e.populations for e in small.experiments)
    assert "congestion_info_large" not in [e.name for e in small.experiments]
    kept = st.full_study(max_exponent=5)  # as it always was: the empty ones stay
    assert [e.name for e in kept.experiments if not e.populations] == [
        "congestion_tau_search_large",
        "beauty_contest_large",
        "random_linear_potential_large",
        "adoption_large",
        "congestion_info_large",
        "congestion_noisy_info_large",
    ]
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['sedes'\].*seeds"):
        st.load_study("quick", sedes=3)
    with pytest.raises(ValueError, match="'nope'.*not a file.*quick, full"):
        st.load_study("nope")


def test_write_definition_copies_the_packaged_text_and_never_replaces(tmp_path):
    path = st.write_definition("full", tmp_path / "mine.toml")
    assert path.read_text(encoding="utf-8") == st.definition_text("full")
    assert st.load_study(path) == st.full_study()
    path.write_text("# my edits\n", encoding="utf-8")
    with pytest.raises(ValueError, match="already exists"):
        st.write_definition("quick", path)
    assert path.read_text(encoding="utf-8") == "# my edits\n"
    with pytest.raises(ValueError, match="unknown built-in.*quick, full"):
        st.write_definition("huge", tmp_path / "other.toml")


TINY_TOML = """
name = "tiny"
seeds = 1

[[experiments]]
name = "tiny_core"
claims = ["C1"]
game = "congestion"
populations = [60]
stage_lengths = [5]
round_budget = 10
"""


def _definition(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "def.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("round_budget = 10", "round_budjet = 10"), r"key 'round_budjet'.*allowed: name, claims"),
        (("seeds = 1", "seeds = 0"), r"key 'seeds' must be an integer >= 1, got 0"),
        (("seeds = 1", "seeds = 1.5"), r"key 'seeds' must be an integer, got 1.5"),
        (("[60]", "[60, true]"), r"'populations', entry 2, must be an integer, got True"),
        (("[60]", '{ powers = [2, "max"] }'), r"needs the top-level key max_exponent"),
        (("[60]", "{ powers = [4, 2] }"), r"powers \[4, 2\] must have low <= high"),
        (("[60]", "{ powers = [2, 12] }"), r"up to 10\^9"),
        (("[60]", "{ from = 2 }"), r"list of integers or \{ powers"),
        (('["C1"]', '["C8"]'), r"unknown claim\(s\) \['C8'\]; valid: C1"),
        (('"congestion"', '"congestoin"'), r"unknown game 'congestoin'; valid: .*congestion"),
        (
            ('game = "congestion"', 'game = "congestion"\ngame_params = { num_actoins = 3 }'),
            r"experiment 'tiny_core': .*num_actoins",
        ),
        (
            ("round_budget = 10", "round_budget = 10\nexplore_prob = 1.5"),
            r"experiment 'tiny_core': explore_prob must be .*\[0, 1\], got 1.5",
        ),
        (
            ("round_budget = 10", "round_budget = 10\nupdate_probs = [0.0]"),
            r"update_probs must lie in \(0, 1\]",
        ),
        (
            ("round_budget = 10", 'round_budget = 10\nbaseline = "other"'),
            r"baseline 'other' is not an experiment",
        ),
        (('name = "tiny"', 'name = "../up"'), r"key 'name' must be letters"),
        (('name = "tiny"', "name = "), r"is not valid TOML"),
        (
            (
                "round_budget = 10",
                'round_budget = 10\n[[experiments.variants]]\nlabel = "x"\n'
                'info = "payoffs"\nnoise = 0.1',
            ),
            r"variant 'x': key 'noise'.*allowed: label, info, sample_size, noise_std",
        ),
        (
            (
                "round_budget = 10",
                'round_budget = 10\n[[experiments.variants]]\nlabel = "x"\n'
                'info = "payoffs"\nnoise_std = 0.1',
            ),
            r"info_noise_std=0.1 needs info='distribution'",
        ),
        (
            (
                "round_budget = 10",
                'round_budget = 10\n[[experiments.variants]]\nlabel = "x"\n'
                'info = "payoffs"\nsample_size = 3\nsharing = "gossip"',
            ),
            r"info_sharing must be one of shared, private, got 'gossip'",
        ),
    ],
)
def test_a_bad_definition_is_refused_naming_key_and_value(tmp_path, edit, message):
    old, new = edit
    assert old in TINY_TOML
    path = _definition(tmp_path, TINY_TOML.replace(old, new, 1))
    with pytest.raises(ValueError, match=message) as error:
        st.load_study(path)
    assert str(path) in str(error.value) or "experiment 'tiny_core'" in str(error.value)


def test_the_tiny_definition_loads():
    # The base of the refusals above is itself valid.
    import tomllib

    study = st.parse_definition(tomllib.loads(TINY_TOML), source="tiny")
    assert study == st.Study(
        "tiny",
        (
            st.Experiment(
                "tiny_core", ("C1",), "congestion", (60,), stage_lengths=(5,), round_budget=10
            ),
        ),
        seeds=1,
    )


# --------------------------------------------------------------------------- CLI


def test_cli_writes_a_definition_and_refuses_to_replace_it(tmp_path, capsys):
    target = tmp_path / "quick.toml"
    assert main(["study", "--quick", "--write-definition", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == st.definition_text("quick")
    assert "--definition" in capsys.readouterr().out
    assert main(["study", "--write-definition", str(target)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == st.definition_text("quick")
    assert main(["study", "--write-definition", str(tmp_path / "x.toml"), "--seeds", "3"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert not (tmp_path / "x.toml").exists()


def test_cli_refuses_a_bad_definition_before_running(tmp_path, capsys):
    path = _definition(tmp_path, TINY_TOML.replace("seeds = 1", "seeds = -1"))
    out = tmp_path / "out"
    assert main(["study", "--definition", str(path), "--out", str(out)]) == 2
    assert "'seeds' must be an integer >= 1, got -1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["def.toml"]
    assert main(["study", "--definition", str(path), "--quick"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_cli_runs_an_edited_definition(tmp_path, capsys):
    path = _definition(tmp_path, TINY_TOML)
    out = tmp_path / "out"
    assert main(["study", "--definition", str(path), "--out", str(out), "--no-progress"]) == 0
    runs = st.read_csv(out / "runs.csv")
    assert [(r["experiment"], r["num_agents"], r["num_stages"]) for r in runs] == [
        ("tiny_core", "60", "2")
    ]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["study"]["name"] == "tiny"


def test_private_variants_reach_the_learner_and_keep_shared_folders_reusable():
    """The private-information experiment's variants are private; a shared variant is
    recorded as before the field existed (folders written then are still reused)."""
    full = {e.name: e for e in st.full_study().experiments}
    private = full["congestion_private_info"]
    assert {v.sharing for v in private.variants} == {"private"}
    assert all(v.label.endswith(" private") for v in private.variants)
    shared = full["congestion_noisy_info"]
    noisy = {v.label: v for v in shared.variants}
    assert {v.sharing for v in shared.variants} == {"shared"}
    assert "sharing" not in st.definition.variant_data(noisy["payoffs m=10"])
    assert st.definition.variant_data(private.variants[0])["sharing"] == "private"
    # Every private variant is the shared variant of the same label, shared.
    for variant in private.variants:
        twin = noisy[variant.label.removesuffix(" private")]
        assert dataclasses.replace(variant, label=twin.label, sharing="shared",
                                   update_probs=twin.update_probs) == twin  # fmt: skip
