"""The plot of a results folder (``plot.png``): one run or several overlaid.

Apart from :mod:`jaxstage.results` so that writing tables never imports matplotlib, and
so the plot can be drawn (or replaced in a test) on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxstage.results import _labels_of
from jaxstage.simulation import SimulationResult

__all__ = ["plot_runs"]

_RUN_STYLES = ("-", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def _nearest_equilibrium(result: SimulationResult) -> np.ndarray | None:
    refs = result.config.get("reference_equilibria") or []
    if not refs:
        return None
    refs_array = np.asarray(refs, dtype=np.float64)
    distance = np.abs(refs_array - result.distribution[-1][None]).sum(axis=1)
    return refs_array[int(np.argmin(distance))]


def plot_runs(runs: Sequence[SimulationResult], labels: Sequence[str], path: Path) -> None:
    """Two panels: distribution of stage actions, and share at an eps-best reply."""
    # The object-oriented API with an explicit Agg canvas: no pyplot, no global backend
    # switch, so writing results never disturbs an interactive matplotlib session.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    first = runs[0]
    action_labels, _ = _labels_of(first)
    num_actions = len(action_labels)
    figure = Figure(figsize=(9, 7), layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    palette = [f"C{j % 10}" for j in range(num_actions)]
    # Runs get colours the action palette does not start with (black first).
    run_colors = ["black", *(f"C{(num_actions + i) % 10}" for i in range(len(runs) - 1))]

    for index, run in enumerate(runs):
        style = _RUN_STYLES[index % len(_RUN_STYLES)]
        for j in range(num_actions):
            top.plot(run.rounds, run.distribution[:, j], color=palette[j], linestyle=style)
        bottom.plot(
            run.rounds,
            run.best_reply_fraction,
            color=run_colors[index],
            linestyle="-" if len(runs) > 1 else style,
            label=f"{labels[index]}: "
            + (
                f"converged at round {run.convergence_round:,}"
                if run.convergence_round is not None
                else "not converged"
            ),
        )
        if run.convergence_round is not None:
            bottom.axvline(run.convergence_round, color=run_colors[index], linewidth=0.8, alpha=0.6)
    equilibrium = _nearest_equilibrium(first)
    if equilibrium is not None:
        for j in range(num_actions):
            top.axhline(equilibrium[j], color=palette[j], linestyle="--", linewidth=1, alpha=0.7)

    handles = [Line2D([], [], color=palette[j], label=action_labels[j]) for j in range(num_actions)]
    if equilibrium is not None:
        handles.append(Line2D([], [], color="gray", linestyle="--", label="equilibrium"))
    if len(runs) > 1:
        handles += [
            Line2D([], [], color="gray", linestyle=_RUN_STYLES[i % len(_RUN_STYLES)], label=label)
            for i, label in enumerate(labels)
        ]
    top.legend(handles=handles, fontsize="small", ncol=2, loc="best")
    top.set_ylabel("share of agents (stage action)")
    top.set_ylim(-0.02, 1.02)

    deltas = sorted({float(run.config.get("delta", 0.05)) for run in runs})
    for delta in deltas:
        bottom.axhline(
            1 - delta, color="gray", linestyle="--", linewidth=1, label=f"1 - delta = {1 - delta:g}"
        )
    epsilons = sorted({run.config.get("eps") for run in runs}, key=str)
    eps_text = ", ".join(f"{e:g}" if isinstance(e, (int, float)) else str(e) for e in epsilons)
    bottom.set_ylabel(f"share at an eps-best reply (eps={eps_text})")
    bottom.set_xlabel("round")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(fontsize="small", loc="lower right")

    longest = [float(run.rounds[-1]) for run in runs if run.rounds[-1] > 0]
    if longest and max(longest) >= 5 * min(longest):
        # Runs of very different lengths: linear up to the shortest first stage, log above.
        first_stage = min(float(run.rounds[1]) for run in runs)
        bottom.set_xscale("symlog", linthresh=max(first_stage, 1.0))

    config = first.config
    figure.suptitle(
        f"{config.get('game', {}).get('name', 'game')}, {config.get('num_agents', 0):,} agents"
    )
    figure.savefig(path, dpi=120)
