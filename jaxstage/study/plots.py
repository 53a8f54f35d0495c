"""The PNG plots of a study folder, drawn from its derived tables alone (so a finished
folder can be drawn again, :func:`redraw_plots`, without running anything)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxstage.study.tables import (
    CONVERGED_SHARE,
    EXPECTED_MF_SLOPE,
    experiment_panel,
    group_rows,
    mf_distance_slopes_table,
    norm_value,
)
from jaxstage.tables import read_csv

__all__ = ["draw_plots", "redraw_plots"]


def _log_scale(ax: Any, axis: str) -> None:
    """Log scale on ``axis`` when the plotted data has finite positive values there
    (matplotlib refuses a log axis without any)."""
    usable = False
    for line in ax.lines:
        x = np.asarray(line.get_xdata(), dtype=float)
        y = np.asarray(line.get_ydata(), dtype=float)
        values = x if axis == "x" else y
        usable |= bool(np.any(np.isfinite(x) & np.isfinite(y) & (values > 0)))
    if usable:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _panel(experiment: str) -> str:
    """The plot panel of an experiment: its own, or its base's for a "_large" one."""
    return experiment_panel(experiment)


def draw_plots(
    folder: Path,
    convergence: Sequence[dict[str, Any]],
    shortest: Sequence[dict[str, Any]],
    speedup: Sequence[dict[str, Any]],
    series: Sequence[dict[str, Any]],
    slopes: Sequence[dict[str, Any]] | None = None,
) -> None:
    """Draw the PNG plots of :data:`~jaxstage.study.STUDY_FILES` into ``folder`` from the
    derived tables (rows as built or as read back from CSV); a plot without data is not
    drawn. ``slopes`` (:func:`~jaxstage.study.tables.mf_distance_slopes_table`) is
    derived from ``convergence`` when not given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def num(value):
        return math.nan if value in (None, "") else float(value)

    def lines(rows, keys):
        return group_rows(rows, keys).items()

    # Rounds to converge against population, one panel per experiment, an experiment's
    # "_large" counterpart (more agents, fewer settings) drawn in its panel.
    experiments = sorted({_panel(r["experiment"]) for r in convergence})
    if experiments:
        cols = min(3, len(experiments))
        rows_n = math.ceil(len(experiments) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.6 * rows_n), squeeze=False)
        for ax, name in zip(axes.flat, experiments, strict=False):
            mine = [r for r in convergence if _panel(r["experiment"]) == name]
            for key, group in lines(mine, ("variant", "stage_length", "update_prob")):
                group = sorted(group, key=lambda r: float(r["num_agents"]))
                n = np.array([float(r["num_agents"]) for r in group])
                budget = np.array([float(r["round_budget"]) for r in group])
                med = np.array([num(r["median_rounds"]) for r in group])
                # A quartile that did not converge is above the budget: drawn to it.
                q25 = np.array([num(r["q25_rounds"]) for r in group])
                q75 = np.array([num(r["q75_rounds"]) for r in group])
                low = med - np.where(np.isnan(q25), budget, q25)
                high = np.where(np.isnan(q75), budget, q75) - med
                label = f"{key[0]}, tau={key[1]}" + (
                    "" if key[2] in (None, "") else f", p={key[2]}"
                )
                bars = ax.errorbar(n, med, yerr=[low, high], marker="o", capsize=3, label=label)
                failed = np.isnan(med)
                if failed.any():  # median not converged: an x at the budget
                    color = bars[0].get_color()
                    ax.plot(n[failed], budget[failed], "x", color=color, markersize=8)
            ax.plot([], [], "kx", label="x: median not converged (at budget)")
            _log_scale(ax, "x")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("agents")
            ax.set_ylabel("median rounds to converge")
            ax.legend(fontsize=6)
        for ax in list(axes.flat)[len(experiments) :]:
            ax.set_visible(False)
        fig.tight_layout()
        fig.savefig(folder / "rounds_vs_population.png", dpi=110)
        plt.close(fig)

    # Only where several stage lengths were tried: with one, "shortest" says nothing.
    searched = [r for r in shortest if len(str(r["stage_lengths_tried"]).split(";")) > 1]
    if searched:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, group in lines(searched, ("experiment", "variant", "update_prob")):
            group = sorted(group, key=lambda r: float(r["num_agents"]))
            n = np.array([float(r["num_agents"]) for r in group])
            tau = np.array([num(r["shortest_stage_length"]) for r in group])
            longest = max(float(t) for r in group for t in str(r["stage_lengths_tried"]).split(";"))
            (line,) = ax.plot(n, tau, marker="o", label=f"{key[0]} {key[1]} p={key[2]}")
            failed = np.isnan(tau)
            if failed.any():  # no stage length tried converges: an x above the longest
                ax.plot(n[failed], np.full(failed.sum(), 2 * longest), "x", color=line.get_color())
        ax.plot([], [], "kx", label="x: none of the stage lengths tried")
        _log_scale(ax, "x")
        _log_scale(ax, "y")
        ax.set_xlabel("agents")
        ax.set_ylabel(f"shortest tau with >= {CONVERGED_SHARE:.0%} converged")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "shortest_stage_length.png", dpi=110)
        plt.close(fig)

    # Information variants only: other learners' speed-ups are in summary.md's tables.
    own_best = [
        r
        for r in speedup
        if r["comparison"] == "own best" and (r.get("learner") or "stage") == "stage"
    ]
    if own_best:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        # One line per variant: an experiment's populations continued by its "_large"
        # counterpart join up. Distinct colours and markers for up to 20 variants.
        colours = plt.get_cmap("tab20").colors
        for i, (key, group) in enumerate(lines(own_best, ("variant",))):
            group = sorted(group, key=lambda r: float(r["num_agents"]))
            ax.plot(
                [float(r["num_agents"]) for r in group],
                [num(r["speedup"]) if num(r["speedup"]) < math.inf else np.nan for r in group],
                marker="osD^v<>ph*"[i % 10],
                color=colours[i % len(colours)],
                label=key[0],
            )
        _log_scale(ax, "x")
        _log_scale(ax, "y")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xlabel("agents")
        ax.set_ylabel("speed-up over no information (own best settings)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        fig.tight_layout()
        fig.savefig(folder / "info_speedup.png", dpi=110)
        plt.close(fig)

    with_br = [
        r
        for r in convergence
        if r.get("median_br_distance") not in (None, "") and "C5" in str(r.get("claims", ""))
    ]
    if with_br:
        fig, ax = plt.subplots(figsize=(6, 4))
        with_br = [{**r, "panel": _panel(r["experiment"])} for r in with_br]
        for key, group in lines(with_br, ("panel", "variant", "stage_length", "update_prob")):
            if len(group) < 2:
                continue
            group = sorted(group, key=lambda r: float(r["num_agents"]))
            ax.plot(
                [float(r["num_agents"]) for r in group],
                [num(r["median_br_distance"]) for r in group],
                marker="o",
                label=f"{key[0]} {key[1]} tau={key[2]} p={key[3]}",
            )
        _log_scale(ax, "x")
        ax.set_xlabel("agents")
        ax.set_ylabel("median L1 distance to best-reply dynamics")
        if ax.lines:
            ax.legend(fontsize=5)
        fig.tight_layout()
        fig.savefig(folder / "br_distance.png", dpi=110)
        plt.close(fig)

    if slopes is None:
        slopes = mf_distance_slopes_table(convergence)
    _draw_mf_distance(plt, folder, [r for r in slopes if "C5" in str(r.get("claims", ""))])

    if series:
        panels = sorted({(r["experiment"], norm_value(r["num_agents"])) for r in series})
        fig, axes = plt.subplots(
            len(panels), 2, figsize=(12, 2.4 * len(panels)), squeeze=False, sharex=False
        )

        def first_share(row):
            shares = row["distribution"]
            return float((json.loads(shares) if isinstance(shares, str) else shares)[0])

        for (gap_ax, share_ax), (name, n) in zip(axes, panels, strict=True):
            mine = [
                r for r in series if r["experiment"] == name and norm_value(r["num_agents"]) == n
            ]
            for key, group in lines(mine, ("update_prob", "seed")):
                rounds = [float(r["round"]) for r in group]
                label = f"update_prob={key[0]}, seed {key[1]}"
                gap_ax.plot(rounds, [num(r["nash_gap"]) for r in group], lw=0.8, label=label)
                share_ax.plot(rounds, [first_share(r) for r in group], lw=0.8, label=label)
            gap_ax.set_title(f"{name}, {n:,} agents", fontsize=9)
            gap_ax.set_ylabel("eps-Nash gap")
            share_ax.set_title(f"{name}, {n:,} agents: share of action 0", fontsize=9)
            share_ax.set_ylabel("share of action 0")
            gap_ax.legend(fontsize=6)
        axes[-1, 0].set_xlabel("round")
        axes[-1, 1].set_xlabel("round")
        fig.tight_layout()
        fig.savefig(folder / "oscillation.png", dpi=110)
        plt.close(fig)


def _draw_mf_distance(plt: Any, folder: Path, slopes: Sequence[dict[str, Any]]) -> None:
    """``mf_distance.png``: median distance to the mean-field trajectory against the
    population, log-log, one line per setting with its fitted slope in the legend."""
    if not slopes:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lowest, highest = math.inf, 0.0
    for row in slopes:
        n = [float(v) for v in str(row["populations"]).split(";")]
        distance = [float(v) for v in str(row["distances"]).split(";")]
        label = (
            f"{row['experiment']} {row['variant']} tau={norm_value(row['stage_length'])} "
            f"p={norm_value(row['update_prob'])}: slope {float(row['slope']):.2f}"
        )
        ax.plot(n, distance, marker="o", label=label)
        lowest, highest = min(lowest, n[0]), max(highest, n[-1])
        if len(ax.lines) == 1:
            anchor = (n[0], distance[0])
    # The sampling-noise rate, through the first line's first point, for the eye.
    ends = np.array([lowest, highest])
    ax.plot(
        ends,
        anchor[1] * (ends / anchor[0]) ** EXPECTED_MF_SLOPE,
        "--",
        color="gray",
        lw=0.8,
        label=f"slope {EXPECTED_MF_SLOPE:g} (sampling noise)",
    )
    _log_scale(ax, "x")
    _log_scale(ax, "y")
    ax.set_xlabel("agents")
    ax.set_ylabel("median L1 distance to the mean-field trajectory")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(folder / "mf_distance.png", dpi=110)
    plt.close(fig)


def redraw_plots(folder: str | os.PathLike[str]) -> list[Path]:
    """Draw the PNG plots of a finished study folder again from its tables (after a
    change to the plotting code; the tables are not touched). Returns the files written.

    Raises:
        ValueError: ``folder`` is not a finished study folder.
    """
    path = Path(folder)
    needed = ("convergence.csv", "shortest_stage_length.csv", "info_speedup.csv", "config.json")
    if not all((path / name).is_file() for name in needed):
        raise ValueError(
            f"{str(path)!r} is not a finished study folder (needs {', '.join(needed)})"
        )
    series = read_csv(path / "series.csv") if (path / "series.csv").is_file() else []
    before = {p.name: p.stat().st_mtime_ns for p in path.glob("*.png")}
    draw_plots(  # the plots read numbers from text, as written
        path,
        read_csv(path / "convergence.csv"),
        read_csv(path / "shortest_stage_length.csv"),
        read_csv(path / "info_speedup.csv"),
        series,
    )
    return sorted(p for p in path.glob("*.png") if before.get(p.name) != p.stat().st_mtime_ns)
