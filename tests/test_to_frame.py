"""``to_frame``: the tidy tables of the CSV files as pandas DataFrames."""

import builtins
import csv
import math

import numpy as np
import pandas as pd
import pytest

import jaxstage as js
from jaxstage.results import write_best_reply, write_results

LEARNER = js.StageLearning(stage_length=3, explore_prob=0.2, update_prob=0.5)


@pytest.fixture(scope="module")
def run():
    return js.simulate(js.make_game("adoption"), LEARNER, 300, 3, seed=1)


@pytest.fixture(scope="module")
def swept():
    game = js.make_game("congestion", num_actions=3)
    return js.sweep(game, LEARNER, 200, 2, seeds=[0, 1], update_prob=[0.5, 0.9])


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def same_cell(text, value):
    """A CSV cell equals a frame cell: empty for missing, else the same value."""
    if text == "":
        return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
    if isinstance(value, (bool, np.bool_)):
        return text == str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(text) == value
    if isinstance(value, (float, np.floating)):
        return float(text) == float(value)
    return text == value


def assert_frame_matches_csv(frame, path):
    rows = read_csv(path)
    assert list(frame.columns) == list(rows[0])
    assert len(frame) == len(rows)
    for i, row in enumerate(rows):
        for column, text in row.items():
            value = frame[column].iloc[i]
            assert same_cell(text, value), (i, column, text, value)


def test_simulation_frame_has_the_rows_and_columns_of_the_csv(run, tmp_path):
    folder = write_results(run, tmp_path / "run", plot=False)
    frame = run.to_frame()
    assert_frame_matches_csv(frame, folder / "results.csv")
    assert len(frame) == run.num_stages + 1
    # Short float32 reprs, as in the CSV: they round-trip the float32 metrics.
    np.testing.assert_array_equal(frame["welfare"].to_numpy(np.float32), run.welfare)


def test_sweep_frame_has_the_rows_and_columns_of_the_csv(swept, tmp_path):
    folder = write_results(swept, tmp_path / "sweep", plot=False)
    frame = swept.to_frame()
    assert_frame_matches_csv(frame, folder / "results.csv")
    assert list(frame.columns[:2]) == ["run", "label"]
    assert frame["run"].tolist() == [0, 0, 0, 1, 1, 1]
    labelled = swept.to_frame(labels=["slow", "fast"])
    assert labelled["label"].tolist() == ["slow"] * 3 + ["fast"] * 3
    with pytest.raises(ValueError, match="labels has 1 entries for 2 runs"):
        swept.to_frame(labels=["one"])


def test_best_reply_frame_has_the_rows_and_columns_of_the_csv(tmp_path):
    result = js.best_reply_dynamics(js.make_game("congestion", num_actions=3), 50)
    folder = write_best_reply(result, tmp_path / "br", record_every=1)
    frame = result.to_frame(record_every=1)
    assert_frame_matches_csv(frame, folder / "trajectory.csv")
    assert frame["step"].dtype == np.int64


def test_frame_columns_have_proper_dtypes(run):
    frame = run.to_frame()
    for column in ("num_agents", "seed", "stage", "round"):
        assert frame[column].dtype == np.int64, column
    # stage_length does not exist at stage 0: a nullable integer, not a float.
    assert frame["stage_length"].dtype == pd.Int64Dtype()
    assert frame["stage_length"].isna().tolist() == [True, False, False, False]
    for column in ("explore_prob", "dist_keep", "welfare", "nash_gap", "switched_fraction"):
        assert frame[column].dtype == np.float64, column
    assert math.isnan(frame["switched_fraction"].iloc[0])
    assert frame["in_equilibrium"].dtype == np.bool_
    assert pd.api.types.is_string_dtype(frame["game"]) and frame["game"].iloc[0] == "adoption"
    assert [c for c in frame.columns if c.startswith("best_reply_fraction_")] == [
        "best_reply_fraction_theta=0.1",
        "best_reply_fraction_theta=0.4",
        "best_reply_fraction_theta=0.8",
    ]


def test_missing_pandas_is_a_clear_import_error(run, swept, monkeypatch):
    dynamics = js.best_reply_dynamics(js.make_game("minority"), 20)
    real_import = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("No module named 'pandas'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    message = 'to_frame needs pandas: pip install "jaxstage\\[frame\\]"'
    for result in (run, swept, dynamics):
        with pytest.raises(ImportError, match=message):
            result.to_frame()
