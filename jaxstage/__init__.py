"""jaxstage: stage learning in very large anonymous games, in JAX.

Populations of millions of agents are arrays; a stage of rounds (exploration, payoffs from
action counts, payoff observation) and the stage-end argmax update are jit-compiled.
See ``MODEL.md`` of the project for what is simulated.

Example:
    >>> import jaxstage as js
    >>> game = js.make_game("congestion", num_actions=3)
    >>> learner = js.StageLearning(stage_length=20, explore_prob=0.1, update_prob=0.2)
    >>> result = js.simulate(game, learner, num_agents=10_000, num_stages=3, seed=0)
    >>> result.best_reply_fraction.shape
    (4,)
"""

__version__ = "0.1.0"

from jaxstage import distributed, games, metrics, testing  # noqa: E402
from jaxstage.best_reply import (  # noqa: E402
    BestReplyResult,
    best_reply_dynamics,
    initial_counts,
    solve_equilibrium,
)
from jaxstage.devices import cpu_core_count, use_cpu_cores  # noqa: E402
from jaxstage.engine import Simulation, SimulationState  # noqa: E402
from jaxstage.eps_greedy import EpsGreedy  # noqa: E402
from jaxstage.exp3 import Exp3  # noqa: E402
from jaxstage.games import AnonymousGame, from_payoff_fn, list_games, make_game  # noqa: E402
from jaxstage.learner import INFO_MODES, StageLearning  # noqa: E402
from jaxstage.learner_interface import Learner  # noqa: E402
from jaxstage.learners import LEARNERS, make_learner  # noqa: E402
from jaxstage.mean_field import MeanFieldTrajectory, mean_field_trajectory  # noqa: E402
from jaxstage.plan import estimate_memory_bytes  # noqa: E402
from jaxstage.records import SimulationResult, StageRecords, SweepResult  # noqa: E402
from jaxstage.simulation import resume, simulate, sweep  # noqa: E402
from jaxstage.sweeps import Sweep  # noqa: E402

__all__ = [
    # games
    "games",
    "AnonymousGame",
    "make_game",
    "list_games",
    "from_payoff_fn",
    # learner and simulation
    "StageLearning",
    "EpsGreedy",
    "Exp3",
    "Learner",
    "LEARNERS",
    "make_learner",
    "INFO_MODES",
    "simulate",
    "resume",
    "sweep",
    "SimulationResult",
    "SweepResult",
    # state and step
    "Simulation",
    "Sweep",
    "SimulationState",
    "StageRecords",
    "estimate_memory_bytes",
    "use_cpu_cores",
    "distributed",
    "cpu_core_count",
    # the mean-field limit (n -> infinity) of stage learning
    "mean_field_trajectory",
    "MeanFieldTrajectory",
    # best-reply dynamics
    "best_reply_dynamics",
    "solve_equilibrium",
    "initial_counts",
    "BestReplyResult",
    # metrics
    "metrics",
    # conformance check of a game
    "testing",
]
