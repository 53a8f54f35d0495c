"""``jaxstage demo``: a million agents on the congestion game, without and with information.

Both runs go into one results folder; an existing one (an earlier demo's, say) is only
replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import jaxstage as js
from jaxstage.cli_config import out_folder
from jaxstage.cli_output import print_equilibria
from jaxstage.results import check_output_folder, write_results

# The demo: one game, two information modes, the same horizon in rounds for both.
# Tune here; only the demo and its options (in jaxstage.cli) read the values.

DEMO_GAME = "congestion"
DEMO_GAME_PARAMS: dict[str, Any] = {"num_actions": 4}
DEMO_AGENTS = 1_000_000
DEMO_ROUNDS = 600  # each run plays this many rounds: DEMO_ROUNDS // stage_length stages
# Exact published payoffs give every agent the same estimates, so the switching share must
# be small or the population herds and overshoots; in exchange one-round stages suffice.
DEMO_LEARNERS: dict[str, dict[str, Any]] = {
    "none": {"stage_length": 10, "explore_prob": 0.05, "update_prob": 0.1, "info": "none"},
    "payoffs": {"stage_length": 1, "explore_prob": 0.05, "update_prob": 0.01, "info": "payoffs"},
}
DEMO_SEED = 0
DEMO_EPS = 0.05
DEMO_DELTA = 0.05
DEMO_OUT = "results/demo"


def cmd_demo(args: argparse.Namespace) -> int:
    """``jaxstage demo``: the two runs, their convergence rounds and one results folder."""
    game = js.make_game(DEMO_GAME, **DEMO_GAME_PARAMS)
    out = out_folder(args.out, DEMO_OUT)
    check_output_folder(out, overwrite=args.overwrite)  # fail before the runs, not after
    print(
        f"demo: {args.agents:,} agents on the {DEMO_GAME} game {DEMO_GAME_PARAMS}, "
        f"{DEMO_ROUNDS:,} rounds per information mode, eps={DEMO_EPS}, delta={DEMO_DELTA}"
    )
    print_equilibria(game)
    runs, labels = [], []
    for mode, fields in DEMO_LEARNERS.items():
        learner = js.StageLearning(**fields)
        num_stages = max(1, DEMO_ROUNDS // int(fields["stage_length"]))
        settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(learner).items())
        print(f"\n== info={mode}: StageLearning({settings}), {num_stages} stages")
        result = js.simulate(
            game,
            learner,
            args.agents,
            num_stages,
            args.seed,
            eps=DEMO_EPS,
            delta=DEMO_DELTA,
            progress=not args.no_progress,
        )
        print(result.summary())
        print_equilibria(game, result.distribution[-1])
        runs.append(result)
        labels.append(f"info={mode}")

    print()
    rounds = {label: run.convergence_round for label, run in zip(labels, runs, strict=True)}
    for label, value in rounds.items():
        if value is None:
            print(f"{label}: not converged within {DEMO_ROUNDS:,} rounds")
        else:
            print(f"{label}: converged at round {value:,}")
    if len(runs) == 2 and all(v is not None for v in rounds.values()):
        (first, a), (second, b) = rounds.items()
        if a and b:
            faster = f"{a / b:.3g}x fewer" if b <= a else f"{b / a:.3g}x more"
            print(f"{second} needed {faster} rounds than {first}")
    folder = write_results(
        runs, out, plot=not args.no_plot, overwrite=args.overwrite, labels=labels
    )
    print(f"results written to {folder}")
    return 0
