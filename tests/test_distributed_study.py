"""``jaxstage study`` over 2 processes on loopback (``jax.distributed`` with gloo): only
process 0 writes, and the tables are those of one process, with the study's sweeps dealt
by rows (plain) or split by agents (checkpointed); a refusal stops every process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_distributed import environment, free_port

from jaxstage import study as st

#: Two sweeps of 2 rows (seeds): rows >= processes, so a plain sweep deals its rows; 50,000
#: agents are 2 blocks, so a checkpointed sweep splits them over the 2 processes.
DEFINITION = """
name = "tiny2"
seeds = 2

[[experiments]]
name = "tiny_core"
claims = ["C1", "C5"]
game = "congestion"
populations = [60, 50_000]
stage_lengths = [5]
round_budget = 20
series = true
series_seeds = 1
"""

#: Columns that record how long a sweep took or what produced it, not what it computed.
UNCOMPARED = ("sweep_seconds", "jaxstage_version", "jax_version")


def study(definition: Path, out: Path, processes: int, *options: str, timeout: float = 240):
    """Run ``jaxstage study`` in ``processes`` processes of 1 CPU device each; returns
    ``[(returncode, stdout, stderr)]`` by process id."""
    command = [sys.executable, "-m", "jaxstage", "study", "--definition", str(definition)]
    command += ["--out", str(out), "--no-progress", "--cpu-devices", "1", *options]
    port = free_port()
    joined = [
        [f"--coordinator=127.0.0.1:{port}", f"--num-processes={processes}", f"--process-id={i}"]
        if processes > 1
        else []
        for i in range(processes)
    ]
    procs = [
        subprocess.Popen(
            command + extra,
            env=environment() | {"JAXSTAGE_DEBUG": ""},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for extra in joined
    ]
    try:
        done = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, done, strict=True)]


def assert_ran(outcomes) -> None:
    for i, (code, _, err) in enumerate(outcomes):
        assert code == 0, f"process {i}: {err[-3000:]}"
    (_, main_out, main_err), *others = outcomes
    assert "wrote" in main_out and "writing" in main_err
    for _, out, err in others:  # process 0 alone reports
        assert "wrote" not in out + err and "writing" not in err


def tables(folder: Path) -> dict[str, list[dict]]:
    return {
        path.name: [
            {k: v for k, v in row.items() if k not in UNCOMPARED} for row in st.read_csv(path)
        ]
        for path in sorted(folder.glob("*.csv"))
    }


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The study in a single process: what the runs of 2 processes must give."""
    root = tmp_path_factory.mktemp("study1")
    definition = root / "tiny2.toml"
    definition.write_text(DEFINITION)
    assert_ran(study(definition, root / "out", 1))
    return definition, root / "out"


@pytest.mark.parametrize("options", [(), ("--checkpoint-every", "1")], ids=["rows", "ckpt"])
def test_two_processes_write_once_the_tables_of_one(one_process, tmp_path, options):
    definition, reference = one_process
    out = tmp_path / "out"
    assert_ran(study(definition, out, 2, *options))
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in reference.iterdir())
    assert {"runs.csv", "series.csv", "convergence.csv", "summary.md"} <= set(names)
    # No journal, checkpoints, staging or probe folder left by either process.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert tables(out) == tables(reference)
    assert len(tables(out)["runs.csv"]) == 4


def test_a_refusal_on_process_0_stops_both(one_process):
    definition, reference = one_process
    before = {p.name: p.stat().st_mtime_ns for p in reference.iterdir()}
    outcomes = study(definition, reference, 2, timeout=120)  # exists: no --overwrite
    assert [code for code, _, _ in outcomes] == [2, 2]
    assert "already holds a study" in outcomes[0][2]
    assert "another process failed" in outcomes[1][2]
    assert {p.name: p.stat().st_mtime_ns for p in reference.iterdir()} == before


def test_two_processes_resume_the_journal_process_0_rewrites(one_process, tmp_path):
    """Every process skips the journalled sweep: the others read the journal only once
    process 0 has dropped its cut-short last line."""
    definition, reference = one_process
    chosen = st.select(st.load_study(definition))
    entry = st.reusable_sweeps(chosen, [reference])["tiny_core|none|60|5"]
    del entry["reused_from"]  # as a run of this study journalled it
    partial = st.partial_folder(tmp_path / "out")
    partial.mkdir()
    (partial / "study.json").write_text(json.dumps(chosen.config(), sort_keys=True, default=str))
    line = json.dumps(entry, default=str) + "\n"
    (partial / "sweeps.jsonl").write_text(line + line[:50])  # killed while journalling
    assert_ran(study(definition, tmp_path / "out", 2, "--resume"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert tables(tmp_path / "out") == tables(reference)
    seconds = {r["num_agents"]: r["sweep_seconds"] for r in st.read_csv(tmp_path / "out/runs.csv")}
    assert seconds["60"] == str(entry["seconds"])  # journalled, not run again
