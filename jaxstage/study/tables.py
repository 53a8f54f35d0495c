"""The derived tables of a study: pure functions of the ``runs`` table.

They take rows as :func:`~jaxstage.study.run_sweep` makes them or as read back from CSV
(every value text): :func:`_norm` makes both compare alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jaxstage.study.definition import Experiment

__all__ = [
    "CONVERGED_SHARE",
    "CONVERGENCE_KEYS",
    "median_with_failures",
    "convergence_table",
    "shortest_stage_length_table",
    "info_speedup_table",
    "experiment_panel",
    "log_log_slope",
    "mf_distance_slopes_table",
    "EXPECTED_MF_SLOPE",
]

#: Share of seeds that must converge for a stage length to count as converging.
CONVERGED_SHARE = 0.9


def _is_true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1")


def _rounds_or_inf(row: dict[str, Any]) -> float:
    if not _is_true(row["converged"]) or row.get("convergence_round") in (None, ""):
        return math.inf
    return float(row["convergence_round"])


def median_with_failures(values: Sequence[float], q: float = 0.5) -> float | None:
    """The ``q`` quantile of rounds, non-converged seeds counted as ``+inf``.

    Uses the lower-median convention for an even count (the ``ceil(q * N)``-th smallest
    value, at least the first), so the result is a value some seed achieved.
    ``None`` when that value is ``+inf`` (too many seeds did not converge) or there are
    no values.

    Example:
        >>> median_with_failures([100, 200, math.inf, math.inf])
        200.0
        >>> median_with_failures([100, math.inf, math.inf, math.inf]) is None
        True
    """
    ordered = sorted(float(v) for v in values)
    if not ordered:
        return None
    index = max(0, math.ceil(q * len(ordered)) - 1)
    value = ordered[index]
    return None if math.isinf(value) else value


def group_rows(rows: Iterable[dict[str, Any]], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    """Rows grouped by their values of ``keys`` (:func:`norm_value`), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(norm_value(row[k]) for k in keys), []).append(row)
    return groups


def norm_value(value: Any) -> Any:
    """Values read back from CSV as text compare equal to the originals."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _median(values: Sequence[float]) -> float | None:
    finite = [float(v) for v in values if v not in (None, "") and math.isfinite(float(v))]
    return float(np.median(finite)) if finite else None


CONVERGENCE_KEYS = ("experiment", "game", "variant", "stage_length", "update_prob", "num_agents")


def convergence_table(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convergence against population: one row per (experiment, game, variant, stage
    length, update_prob, population).

    Columns: the keys, ``learner`` (``"stage"`` in folders written before other learners
    existed), ``round_budget``, ``seeds``, ``converged``, ``share_converged``,
    ``median_rounds``, ``q25_rounds``, ``q75_rounds`` (over all seeds, non-converged as
    ``+inf``, see :func:`median_with_failures`; ``None`` = not converged),
    ``median_rounds_converged`` (over the converged seeds only), ``median_final_nash_gap``,
    ``median_br_distance``, ``median_mf_distance`` (``None`` where the mean-field map does
    not apply; a row without the column, from an older study, counts as missing).
    """
    table = []
    for key, rows in group_rows(runs, CONVERGENCE_KEYS).items():
        rounds = [_rounds_or_inf(r) for r in rows]
        finite = [r for r in rounds if math.isfinite(r)]
        table.append(
            dict(zip(CONVERGENCE_KEYS, key, strict=True))
            | {
                "claims": rows[0]["claims"],
                "learner": rows[0].get("learner") or "stage",
                "info": rows[0]["info"],
                "round_budget": norm_value(rows[0]["round_budget"]),
                "seeds": len(rows),
                "converged": len(finite),
                "share_converged": len(finite) / len(rows),
                "median_rounds": median_with_failures(rounds, 0.5),
                "q25_rounds": median_with_failures(rounds, 0.25),
                "q75_rounds": median_with_failures(rounds, 0.75),
                "median_rounds_converged": float(np.median(finite)) if finite else None,
                "median_final_nash_gap": _median([r["final_nash_gap"] for r in rows]),
                "median_br_distance": _median([r["br_distance"] for r in rows]),
                "median_mf_distance": _median([r.get("mf_distance") for r in rows]),
            }
        )
    return table


def shortest_stage_length_table(
    convergence: Sequence[dict[str, Any]], threshold: float = CONVERGED_SHARE
) -> list[dict[str, Any]]:
    """Per (experiment, game, variant, update_prob, population): the smallest stage length
    whose share of converged seeds is at least ``threshold`` within the round budget.

    Stage lengths are not assumed monotone: the smallest qualifying one is reported even
    when a longer one fails. ``shortest_stage_length`` is ``None`` when none qualifies.
    ``stage_lengths_tried`` and ``shares`` list what was run (ascending stage length).
    """
    keys = ("experiment", "game", "variant", "update_prob", "num_agents")
    table = []
    for key, rows in group_rows(convergence, keys).items():
        rows = sorted(rows, key=lambda r: float(r["stage_length"]))
        qualifying = [
            norm_value(r["stage_length"])
            for r in rows
            if float(r["share_converged"]) >= threshold - 1e-12
        ]
        table.append(
            dict(zip(keys, key, strict=True))
            | {
                "round_budget": norm_value(rows[0]["round_budget"]),
                "threshold": threshold,
                "shortest_stage_length": qualifying[0] if qualifying else None,
                "stage_lengths_tried": ";".join(str(norm_value(r["stage_length"])) for r in rows),
                "shares": ";".join(f"{float(r['share_converged']):.2f}" for r in rows),
            }
        )
    return table


def _best_setting(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row with the smallest median rounds (ties: higher share, shorter tau)."""
    if not rows:
        return None

    def score(r):
        median = r["median_rounds"]
        median = math.inf if median in (None, "") else float(median)
        return (median, -float(r["share_converged"]), float(r["stage_length"]))

    return min(rows, key=score)


def _ratio(baseline: Any, other: Any) -> float | None:
    """``baseline / other`` for median rounds; ``inf`` when only the baseline failed or
    only ``other`` converged at round 0, ``0`` when only ``other`` failed, ``None`` when
    both failed, ``1`` when both converged at round 0."""
    b = math.inf if baseline in (None, "") else float(baseline)
    o = math.inf if other in (None, "") else float(other)
    if math.isinf(b) and math.isinf(o):
        return None
    if math.isinf(b):
        return math.inf
    if math.isinf(o):
        return 0.0
    if o == 0:  # converged from the initial state (e.g. an equilibrium start)
        return 1.0 if b == 0 else math.inf
    return b / o


def info_speedup_table(
    convergence: Sequence[dict[str, Any]], experiments: Sequence[Experiment] = ()
) -> list[dict[str, Any]]:
    """Speed-up of each information variant over the ``"none"`` variant, per population.

    For each experiment with a ``"none"`` variant (or a ``baseline`` experiment, looked up
    in ``experiments``), each other variant and each population, two rows:

    * ``comparison="own best"``: each side at its own best setting (the stage length and
      update_prob with the smallest median rounds among those run);
    * ``comparison="same setting"``: the variant at the baseline's best setting (only when
      that setting was run for the variant).

    ``speedup = median_rounds(none) / median_rounds(variant)``; ``inf`` when only the
    baseline did not converge (lower bound: ``round_budget / median_rounds(variant)``),
    ``0`` when only the variant did not, ``None`` when neither did.
    """
    baselines = {e.name: e.baseline for e in experiments}
    by_exp = group_rows(convergence, ("experiment",))
    table = []
    for (name,), rows in by_exp.items():
        base_rows = [r for r in rows if r["variant"] == "none"]
        if not base_rows and baselines.get(name):
            base_rows = [r for r in by_exp.get((baselines[name],), []) if r["variant"] == "none"]
        if not base_rows:
            continue
        variants = sorted({r["variant"] for r in rows if r["variant"] != "none"})
        populations = sorted({norm_value(r["num_agents"]) for r in rows})
        for n in populations:
            base = _best_setting([r for r in base_rows if norm_value(r["num_agents"]) == n])
            if base is None:
                continue
            for variant in variants:
                mine = [
                    r for r in rows if r["variant"] == variant and norm_value(r["num_agents"]) == n
                ]
                best = _best_setting(mine)
                same = [
                    r
                    for r in mine
                    if norm_value(r["stage_length"]) == norm_value(base["stage_length"])
                    and norm_value(r["update_prob"]) == norm_value(base["update_prob"])
                ]
                for comparison, row in (
                    ("own best", best),
                    ("same setting", same[0] if same else None),
                ):
                    if row is None:
                        continue
                    table.append(
                        {
                            "experiment": name,
                            "game": row["game"],
                            "num_agents": n,
                            "variant": variant,
                            "learner": row.get("learner") or "stage",
                            "info": row["info"],
                            "comparison": comparison,
                            "stage_length": norm_value(row["stage_length"]),
                            "update_prob": norm_value(row["update_prob"]),
                            "median_rounds": row["median_rounds"],
                            "share_converged": row["share_converged"],
                            "baseline_stage_length": norm_value(base["stage_length"]),
                            "baseline_update_prob": norm_value(base["update_prob"]),
                            "baseline_median_rounds": base["median_rounds"],
                            "baseline_share_converged": base["share_converged"],
                            "round_budget": norm_value(row["round_budget"]),
                            "speedup": _ratio(base["median_rounds"], row["median_rounds"]),
                        }
                    )
    return table


#: The slope of log(mf_distance) on log(n) where sampling noise dominates: the distance
#: of an empirical distribution of ``n`` draws from its mean falls as ``n ** -0.5``.
EXPECTED_MF_SLOPE = -0.5

#: The keys of one line of :func:`mf_distance_slopes_table` (and of ``mf_distance.png``).
MF_SLOPE_KEYS = ("experiment", "game", "variant", "stage_length", "update_prob")


def experiment_panel(experiment: str) -> str:
    """The experiment an experiment continues: its own name, or its base's for a
    ``"_large"`` one (the same settings at larger populations)."""
    return experiment.removesuffix("_large")


def log_log_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log(y)`` on ``log(x)`` (at least two distinct ``x``).

    Example:
        >>> round(log_log_slope([100, 10_000], [0.1, 0.01]), 12)
        -0.5
    """
    log_x, log_y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if log_x.size < 2 or np.ptp(log_x) == 0:
        raise ValueError(f"a slope needs two distinct populations, got {list(x)}")
    return float(np.polyfit(log_x, log_y, 1)[0])


def mf_distance_slopes_table(convergence: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """How the median ``mf_distance`` falls with the population, per setting.

    One row per (experiment, game, variant, stage length, update_prob) with a positive
    ``median_mf_distance`` at two or more populations; a ``"_large"`` experiment is
    joined to its base (:func:`experiment_panel`). ``slope`` is the least-squares slope
    of ``log(median_mf_distance)`` on ``log(num_agents)`` (:func:`log_log_slope`),
    ``expected_slope`` :data:`EXPECTED_MF_SLOPE`; ``populations`` and ``distances`` list
    the points (ascending population).
    """
    usable = [
        {**r, "experiment": experiment_panel(str(r["experiment"]))}
        for r in convergence
        if r.get("median_mf_distance") not in (None, "") and float(r["median_mf_distance"]) > 0
    ]
    table = []
    for key, rows in group_rows(usable, MF_SLOPE_KEYS).items():
        rows = sorted(rows, key=lambda r: float(r["num_agents"]))
        n = [float(r["num_agents"]) for r in rows]
        if len(set(n)) < 2:
            continue
        distance = [float(r["median_mf_distance"]) for r in rows]
        table.append(
            dict(zip(MF_SLOPE_KEYS, key, strict=True))
            | {
                "claims": rows[0].get("claims", ""),
                "info": rows[0]["info"],
                "min_agents": norm_value(rows[0]["num_agents"]),
                "max_agents": norm_value(rows[-1]["num_agents"]),
                "points": len(rows),
                "slope": round(log_log_slope(n, distance), 4),
                "expected_slope": EXPECTED_MF_SLOPE,
                "populations": ";".join(str(norm_value(r["num_agents"])) for r in rows),
                "distances": ";".join(f"{d:.4g}" for d in distance),
            }
        )
    return table
