"""One process of a distributed test run (``tests/test_distributed.py`` starts them).

    python tests/distributed_worker.py JOB.json OUT.json PROCESS_ID NUM_PROCESSES PORT DEVICES

Joins a run of ``NUM_PROCESSES`` processes on loopback (none when it is 1) with ``DEVICES``
CPU devices each, runs the cases of ``JOB.json`` (a list of ``{"name", "call", "kwargs"}``)
and writes, from every process, the sha256 of each result's arrays to ``OUT.json``
(``OUT.json`` gets the process id appended). A case that raises records its error.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

FIELDS = (
    "distribution_by_type",
    "best_reply_fraction_by_type",
    "played_distribution",
    "realized_mean_payoff",
    "switched_fraction",
    "expected_payoffs",
    "nash_gap",
    "convergence_stage",
)


def digest(result) -> str:
    h = hashlib.sha256()
    for field in FIELDS:
        value = np.asarray(getattr(result, field))
        if value.dtype == object:  # e.g. convergence_stage None: its text, not a pointer
            h.update(repr(value.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(value).tobytes())
    if result.final_actions is not None:
        h.update(np.ascontiguousarray(result.final_actions).tobytes())
    return h.hexdigest()


def run_case(js, case: dict) -> list[str]:
    kwargs = dict(case["kwargs"])
    if case["call"] == "resume":
        result = js.resume(kwargs["checkpoint_dir"])
        rows = result if isinstance(result, js.SweepResult) else [result]
        return [digest(row) for row in rows]
    if case["call"] == "memory_share":  # a limit between one host's share and the whole
        return [memory_share(js, kwargs)]
    game = js.make_game(kwargs.pop("game"), **kwargs.pop("game_kwargs", {}))
    learner = js.StageLearning(**kwargs.pop("learner", {}))
    call = case["call"]
    if call == "simulate":
        return [digest(js.simulate(game, learner, **kwargs))]
    if call == "sweep":
        return [digest(row) for row in js.sweep(game, learner, **kwargs)]
    raise ValueError(f"unknown call {call!r}")


def memory_share(js, kwargs: dict) -> str:
    """Whether a run fits under 3/4 of its one-process memory estimate (it does when
    each of two hosts holds half the shards)."""
    from jaxstage import plan

    game = js.make_game(kwargs["game"], **kwargs["game_kwargs"])
    learner = js.StageLearning()
    n = kwargs["num_agents"]
    spec = js.Simulation(game, learner, n, 2, block_size=kwargs["block_size"]).spec
    needed = plan.estimate_memory_bytes(
        n,
        game.num_actions,
        learner,
        1,
        spec.kernel,
        spec.block_size,
        spec.event_capacity,
        spec.num_shards,
        spec=spec,
    )
    try:
        js.Simulation(
            game,
            learner,
            n,
            2,
            block_size=kwargs["block_size"],
            memory_limit_bytes=int(0.75 * needed),
        )
    except ValueError as error:
        return f"refused: {error}"
    return "fits"


def main() -> None:
    job, out, process_id, num_processes, port, devices = sys.argv[1:7]
    process_id, num_processes, devices = int(process_id), int(num_processes), int(devices)
    import jax

    jax.config.update("jax_num_cpu_devices", devices)
    import jaxstage as js

    if num_processes > 1:
        js.distributed.initialize(
            f"127.0.0.1:{port}",
            num_processes,
            process_id,
            initialization_timeout=int(os.environ.get("JAXSTAGE_TEST_JOIN_TIMEOUT", "60")),
            heartbeat_timeout=10,
        )
    results = {}
    with open(job) as file:
        cases = json.load(file)
    for case in cases:
        Path(f"{out}.{process_id}.started").write_text(case["name"])
        try:
            results[case["name"]] = run_case(js, case)
        except Exception as error:  # noqa: BLE001 - recorded for the test to show
            results[case["name"]] = f"error: {type(error).__name__}: {error}"
    with open(f"{out}.{process_id}", "w") as file:
        json.dump(
            {"devices": jax.device_count(), "processes": jax.process_count(), "results": results},
            file,
        )


if __name__ == "__main__":
    main()
