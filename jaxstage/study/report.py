"""``summary.md``: the derived numbers of a study per claim, as markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxstage.study.definition import CLAIMS, Study
from jaxstage.study.tables import CONVERGED_SHARE, EXPECTED_MF_SLOPE
from jaxstage.tables import markdown_table

__all__ = ["summary_markdown"]


def summary_markdown(
    study: Study,
    convergence: Sequence[dict[str, Any]],
    shortest: Sequence[dict[str, Any]],
    speedup: Sequence[dict[str, Any]],
    wall_seconds: float,
    command: str,
    reused: Sequence[dict[str, Any]] = (),
    *,
    slopes: Sequence[dict[str, Any]] = (),
    mf_missing: dict[str, list[str]] | None = None,
) -> str:
    """The derived numbers per claim as markdown tables (no interpretation).

    Under C5 also the slopes of the distance to the mean-field trajectory against the
    population (``slopes``: :func:`~jaxstage.study.tables.mf_distance_slopes_table`) and,
    once per reason, why that distance is missing where it is (``mf_missing``)."""
    parts = [
        f"# Study `{study.name}`: derived tables\n",
        f"Command: `{command}`; {study.seeds} seeds per setting; total wall time "
        f"{wall_seconds:.0f} s.\n",
    ]
    for folder in sorted({e["reused_from"] for e in reused}):
        taken = [e for e in reused if e["reused_from"] == folder]
        parts.append(
            f"{len(taken)} sweeps were taken from the finished study `{folder}` instead "
            f"of run again (their own run time, {sum(e['seconds'] for e in taken):.0f} s, "
            "is not in the wall time above).\n"
        )
    parts += [
        "Rounds: medians and quartiles over all seeds, a non-converged seed counting as "
        "+inf (— = not converged in at least that share of seeds). A run converged when "
        "at least 1-delta of the agents play an eps-best reply from some stage to the end "
        "of the run, for at least `hold_stages` recorded states.\n",
    ]
    conv_cols = (
        "experiment",
        "variant",
        "stage_length",
        "update_prob",
        "num_agents",
        "round_budget",
        "share_converged",
        "median_rounds",
        "q25_rounds",
        "q75_rounds",
        "median_final_nash_gap",
        "median_br_distance",
        "median_mf_distance",
    )
    for claim in CLAIMS:
        names = [e.name for e in study.experiments if claim in e.claims]
        if not names:
            continue
        parts.append(f"## {claim}\n")
        if claim == "C2":
            rows = [r for r in shortest if r["experiment"] in names]
            parts.append(
                f"Shortest stage length converging in >= {CONVERGED_SHARE:.0%} of seeds "
                "within the round budget:\n"
            )
            parts.append(
                markdown_table(
                    rows,
                    (
                        "experiment",
                        "variant",
                        "update_prob",
                        "num_agents",
                        "round_budget",
                        "shortest_stage_length",
                        "stage_lengths_tried",
                        "shares",
                    ),
                )
            )
        if claim in ("C3", "C4", "learners"):
            rows = [r for r in speedup if r["experiment"] in names]
            parts.append(
                "Speed-up = median rounds (none) / median rounds (variant); `own best`: each "
                "at its own best (stage length, update_prob) among those run; `same setting`: "
                "the variant at the plain learner's best setting.\n"
            )
            parts.append(
                markdown_table(
                    rows,
                    (
                        "experiment",
                        "num_agents",
                        "variant",
                        "comparison",
                        "stage_length",
                        "update_prob",
                        "median_rounds",
                        "share_converged",
                        "baseline_stage_length",
                        "baseline_update_prob",
                        "baseline_median_rounds",
                        "speedup",
                    ),
                )
            )
        rows = [r for r in convergence if r["experiment"] in names]
        parts.append(markdown_table(rows, conv_cols))
        if claim == "C5":
            parts.append(_mean_field_part(slopes, mf_missing or {}))
    return "\n".join(parts)


def _mean_field_part(slopes: Sequence[dict[str, Any]], missing: dict[str, list[str]]) -> str:
    """The C5 section's distance to the mean-field trajectory: slopes, then gaps."""
    parts = [
        "### Distance to the mean-field trajectory against population\n",
        "`mf_distance`: mean over stages of the L1 distance between a run and the "
        "mean-field trajectory (MODEL.md section 9) from the exact uniform start. Slope of "
        "log(median mf_distance) on log(agents), least squares, per setting with at least "
        f"two populations (every experiment, not only C5's; expected about "
        f"{EXPECTED_MF_SLOPE} where sampling noise dominates):\n",
    ]
    if slopes:
        columns = ("experiment", "variant", "stage_length", "update_prob", "min_agents")
        columns += ("max_agents", "points", "slope", "distances")
        parts.append(markdown_table(slopes, columns))
    else:
        parts.append("No setting has mf_distance at two populations.\n")
    if missing:
        parts.append("mf_distance is missing (empty) for these settings, and why:\n")
        for reason, labels in missing.items():
            parts.append(f"- {reason}: {'; '.join(labels)}")
        parts.append("")
    return "\n".join(parts)
