"""Agent-rounds per second of whole ``js.simulate`` calls: the timing shared by the
benchmarks that compare learners and information variants (``learners.py``,
``private_info.py``), each with its own configurations."""

from __future__ import annotations

import time

import numpy as np


def simulate_rates(
    game, learner, num_agents: int, *, num_stages: int, kernel: str, repeats: int
) -> list[float]:
    """One call with seed 0 to compile and warm up, then ``repeats`` timed calls (seeds
    1, 2, ...); a call ends when its host values exist. Agent-rounds come from the run's
    own stage lengths, so a learner of any stage length is counted right."""
    import jaxstage as js

    js.simulate(game, learner, num_agents, num_stages, seed=0, kernel=kernel)
    rates = []
    for seed in range(1, repeats + 1):
        begun = time.perf_counter()
        result = js.simulate(game, learner, num_agents, num_stages, seed=seed, kernel=kernel)
        agent_rounds = num_agents * int(np.sum(result.stage_length))  # host values: run done
        rates.append(agent_rounds / (time.perf_counter() - begun))
    return rates
