"""``jaxstage games`` and ``jaxstage br``: the built-in games and their best replies."""

from __future__ import annotations

import argparse

import jaxstage as js
from jaxstage.cli_config import game_from, out_folder, parse_initial
from jaxstage.cli_output import format_vector, print_equilibria
from jaxstage.games import list_games, make_game
from jaxstage.results import check_output_folder, write_best_reply


def cmd_games(args: argparse.Namespace) -> int:
    """``jaxstage games``: each built-in game, its parameters and what is known of it."""
    for name in list_games():
        game = make_game(name)
        print(name)
        print(f"  {game.describe().replace('``', '')}")
        actions = game.action_names or tuple(str(j) for j in range(game.num_actions))
        print(f"  actions (default parameters): {', '.join(actions)}")
        if game.num_types > 1:
            types = game.type_names or tuple(str(t) for t in range(game.num_types))
            print(f"  types: {', '.join(types)} with shares {list(game.type_shares)}")
        print("  parameters:")
        docs = game.param_docs()
        width = max((len(key) for key in docs), default=0)
        for key, doc in docs.items():
            print(f"    {key:<{width}}  {doc}")
        lipschitz = game.lipschitz()
        print(
            "  Lipschitz constant: "
            + ("not Lipschitz / unknown" if lipschitz is None else f"{lipschitz:g}")
        )
        equilibria = game.equilibria()
        if equilibria:
            listed = "; ".join(format_vector(e) for e in equilibria)
            print(f"  equilibria (default parameters): {listed}")
        else:
            print(f"  equilibria: none analytic (find one with: jaxstage br --game {name})")
        print(f"  best-reply dynamics: {game.best_reply_note}")
        print()
    return 0


def cmd_br(args: argparse.Namespace) -> int:
    """``jaxstage br``: count-level best-reply dynamics, optionally written to a folder."""
    game = game_from(args, {})
    initial = parse_initial(args.initial, game.num_actions)
    out = out_folder(args.out, None)
    if out is not None:
        check_output_folder(out, overwrite=args.overwrite)
    result = js.best_reply_dynamics(
        game,
        args.agents,
        mode=args.mode,
        inertia=args.inertia,
        eps=args.eps,
        initial=initial,
        max_steps=args.max_steps,
        seed=args.seed,
        record_every=args.record_every,
    )
    print(
        f"game {game.name}, {args.agents:,} agents, {args.mode} best-reply dynamics"
        + (f" with inertia {args.inertia:g}" if args.mode == "simultaneous" else "")
        + f", eps={args.eps:g}, seed {args.seed}"
    )
    print(f"converged: {'yes' if result.converged else 'no'}")
    print(f"cycled: {'yes' if result.cycled else 'no'}")
    limit = result.config.get("max_steps")
    gave_up = limit is not None and result.steps >= limit and not result.converged
    print(f"steps: {result.steps:,}" + (f" (gave up at max_steps={limit:,})" if gave_up else ""))
    print(f"final distribution {format_vector(result.distribution)}")
    print(f"eps-Nash gap {result.nash_gap:.4g}")
    print_equilibria(game, result.distribution)
    if out is not None:
        folder = write_best_reply(
            result, out, record_every=args.record_every, overwrite=args.overwrite
        )
        print(f"results written to {folder}")
    return 0
