"""``jaxstage study``: the convergence-versus-population study (:mod:`jaxstage.study`).

:mod:`jaxstage.study` is imported only when the command runs (or ``--claims`` is read).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxstage.cli_config import out_folder

STUDY_OUT = {"quick": "results/study-quick", "full": "results/study"}


def parse_claims(text: str) -> list[str]:
    """``--claims C1,C3``: a comma-separated list of claims of :data:`jaxstage.study.CLAIMS`."""
    from jaxstage.study import CLAIMS

    claims = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in claims if c not in CLAIMS]
    if bad or not claims:
        raise argparse.ArgumentTypeError(
            f"unknown claim(s) {bad or [text]}; valid: {', '.join(CLAIMS)}"
        )
    return claims


def cmd_study(args: argparse.Namespace) -> int:
    """``jaxstage study``: write a definition, or run a (selected) study into a folder."""
    from jaxstage import distributed
    from jaxstage import study as st
    from jaxstage.study.processes import on_main

    mode = "quick" if args.quick else "full"
    if args.write_definition is not None:
        # Only a copy of a built-in definition: run options here would be silently lost.
        given = [
            option
            for option, value in (
                ("--definition", args.definition),
                ("--out", args.out),
                ("--seeds", args.seeds),
                ("--max-agents", args.max_agents),
                ("--claims", args.claims),
                ("--experiments", args.experiments),
                ("--reuse", args.reuse),
                ("--overwrite", args.overwrite or None),
                ("--resume", args.resume or None),
                ("--checkpoint-every", args.checkpoint_every),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"--write-definition copies a built-in definition (--quick or --full) and "
                f"runs nothing; it takes none of {', '.join(given)}"
            )
        # Process 0 writes the file (never replaced: a second writer would be refused).
        on_main(lambda: st.write_definition(mode, args.write_definition), "write the definition")
        written = Path(args.write_definition)
        print(
            f"wrote the {mode} study definition to {written}; edit it, then run "
            f"'jaxstage study --definition {written}'"
        )
        return 0
    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    base = st.load_study(mode if args.definition is None else args.definition)
    chosen = st.select(
        base,
        claims=args.claims,
        max_agents=args.max_agents,
        seeds=args.seeds,
        experiments=args.experiments,
    )
    chosen.validate()
    default_out = STUDY_OUT[mode] if args.definition is None else f"results/study-{base.name}"
    out = out_folder(args.out, default_out)
    # Process 0 checks (the check makes a probe folder); a refusal stops every process.
    on_main(lambda: st.check_study_folder(out, overwrite=args.overwrite), "check --out")
    sweeps = sum(len(st.sweep_keys(e)) for e in chosen.experiments)
    if distributed.is_main_process():  # stderr: the others' is kept, for their errors
        print(
            f"study {base.name}: {len(chosen.experiments)} experiments, {sweeps} sweeps of "
            f"{chosen.seeds} seeds; writing {out}",
            file=sys.stderr,
        )
    folder = st.run_study(
        chosen,
        out,
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.no_progress,
        reuse=args.reuse or (),
        checkpoint_every=args.checkpoint_every,
        command=" ".join(["jaxstage", "study"] + list(args.argv_rest)),
    )
    if not distributed.is_main_process():  # process 0 reports
        return 0
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    print(f"wrote {folder} in {config['wall_seconds']:.0f} s (see {folder / 'summary.md'})")
    return 0
