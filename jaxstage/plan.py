"""The plan of a run, before anything is traced: validation of the user's input, the
static :class:`~jaxstage.spec.RunSpec` (kernel, exploration path, blocks, devices), the
traced :class:`~jaxstage.spec.RunParams`, and the memory estimate that refuses a run
too large for the device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import agent_events, agent_stage, distributed, events, fast, private_info
from jaxstage._validation import check_int, check_probability, check_real
from jaxstage.games import AnonymousGame, Params, check_num_actions, type_counts
from jaxstage.learner import StageLearning
from jaxstage.learner_interface import Learner
from jaxstage.metrics import (
    VECTORISED_DEVIATIONS_UP_TO,
)
from jaxstage.spec import RunParams, RunSpec, needs_own_estimates

#: Largest population: the fast kernel's loop over rounds, with agent indices as two
#: 32-bit words and counts as exact 64-bit values past :data:`MAX_INT32_AGENTS`.
MAX_AGENTS = 2**40
#: Largest population of the reference kernel and of the fast kernel's events and agents
#: paths (int32 agent indices and counts), and of count-level best-reply dynamics.
MAX_INT32_AGENTS = 2**31 - 1
#: The fast kernel pads the population to whole blocks per device; the padded agents'
#: int32 indices reach ``MAX_PADDED_AGENTS - 1`` (of the population, or with
#: ``spec.wide_counts`` of each shard), so every population up to
#: :data:`MAX_INT32_AGENTS` fits with power-of-two blocks.
MAX_PADDED_AGENTS = 2**31
#: Tests only: count as past :data:`MAX_INT32_AGENTS` (``RunSpec.wide_counts``) at any
#: population, to check that the wide counts give the int32 path's numbers bitwise.
FORCED_WIDE_COUNTS = False

KERNELS = ("auto", "reference", "fast")
#: How the fast kernel draws exploration (see ``simulate``).
FAST_PATHS = ("auto", "events", "rounds", "agents")
#: Private distribution samples larger than this run on the reference kernel on a CPU
#: with ``kernel="auto"``: its ``Multinomial(m, d)`` per agent (``O(k)``) beats the agents
#: path's ``m`` draws per agent from here on (``benchmarks/private_info.py``: 10^5 agents,
#: k = 4, stage length 10, M agent-rounds/s fast / reference: 38 / 11 at m = 100, 18 / 12
#: at 256, 7.6 / 12 at 1000 by the agents path's own multinomial; docs/performance.md).
PRIVATE_SAMPLES_ON_REFERENCE_FROM = 384
#: Platforms on which ``fast_path="auto"`` takes the agents path (designed for GPUs).
AGENTS_PATH_PLATFORMS = ("cuda", "rocm", "gpu")
#: Tests only: force the agents path's events per agent and stage (``E``); the driver
#: still doubles it while some agent needs more, so the numbers are those of any ``E``.
FORCED_AGENT_EVENTS: int | None = None


def estimate_memory_bytes(
    num_agents: int,
    num_actions: int,
    learner: StageLearning,
    batch: int = 1,
    kernel: str = "reference",
    block_size: int | None = None,
    event_capacity: int | None = None,
    devices: int = 1,
    spec: RunSpec | None = None,
) -> int:
    """Upper estimate of the device memory a run needs (all devices together).

    A ``spec`` of the agents path (``spec.exploration_path == "agents"``) is sized by
    :func:`agents_memory_bytes` (its blocks, tiles and stage length; the other arguments
    but ``learner`` and ``batch`` are then taken from it).

    Reference kernel: the stage actions and their copies, the per-round temporaries
    (random bits, played actions, payoffs) and, when the information mode needs them, the
    per-agent ``(k, n)`` accumulators and stage-end estimates. Fast kernel: int8 stage
    actions (int16 past 128 actions) of every row and of the row a stage writes plus one
    row's per-block
    temporaries (a sweep runs its rows one after another), including the
    exploration-event slots of a batch (``event_capacity``: as the run would choose from
    ``learner`` when not given), once per device the population is split over.
    """
    if spec is not None and spec.kernel == "fast" and spec.exploration_path == "agents":
        return agents_memory_bytes(spec, learner, batch)
    if kernel == "fast":
        capacity = event_capacity_for([learner], 1) if event_capacity is None else event_capacity
        block = block_size or fast.choose_block_size(num_agents, num_actions, capacity)
        per_block = block * (96 + 48 * num_actions)
        per_block += 64 * fast.event_slots_per_block(block, capacity)
        if learner.info_sample_size is not None:
            per_block += 64 * min(fast.MAX_BLOCK_SLOTS, learner.info_sample_size * capacity)
        action_bytes = fast.action_dtype(num_actions).itemsize
        # Every row's actions and the new actions a chunk writes (a single run's input
        # is donated: ``simulate`` hands its state over; an advance with ``donate=False``
        # copies it first, one buffer more than estimated here).
        held = 2 * batch * action_bytes * (num_agents + block)
        return int(held + devices * per_block + deviation_bytes(num_actions) + 64 * 2**20)
    per_agent = 64 + 16 * num_actions
    if needs_own_estimates(learner.info, learner.info_sample_size):
        per_agent += 24 * num_actions
    if learner.private_estimates:  # each agent's own counts or pooled sums, and its scores
        per_agent += 16 * num_actions
    per_agent += learner.state_bytes_per_agent(num_actions)
    return int(batch * num_agents * per_agent + batch * deviation_bytes(num_actions) + 64 * 2**20)


def agents_memory_bytes(spec: RunSpec, learner: StageLearning, batch: int = 1) -> int:
    """Upper estimate of the device memory of the agents path (all devices together).

    Per device, one block's temporaries at ``agent_stage.AGENT_BYTES`` per agent (the
    fixed part, plus the per-action part when agents estimate from their own
    observations: pass 2's ``(k, B)`` sums and counts; shared estimates have none), the
    sampled agents' own sums at the same rate
    (``info_sample_size``), pass 1's tile-private histograms (int32 departures and
    arrivals by round, type and action: ``4 * 2 * max_stage_length * T * k`` bytes per
    tile of ``spec.tile_size`` agents) and its ``(max_stage_length + 1, T * k)`` counts;
    for all devices, the int8 (int16) stage actions of every row plus the row a stage
    rewrites (a chunk reads one buffer and writes another); nothing is kept between the
    passes. ``AGENT_BYTES`` is an upper bound of XLA's buffer assignment in the H200
    compile (stage length 50, p = 0.05): own estimates, 106 bytes per agent at 2^20
    agents and 123 at 10^9 with k = 8 (192 estimated), 12,337 at k = 1024 (16,448);
    shared estimates about 19 at k = 8 and 25 at k = 1024 (64). tests/test_agents_path.py
    checks it on the CPU.
    """
    k, width = spec.num_actions, spec.num_types * spec.num_actions
    per_agent = agent_stage.AGENT_BYTES[0]
    if spec.needs_own_estimates:
        per_agent += agent_stage.AGENT_BYTES[1] * k
    block = spec.block_size
    tiles = -(-block // max(spec.tile_size, 1))
    rounds = spec.max_stage_length
    per_block = block * per_agent
    per_block += 4 * 2 * rounds * width * tiles + 4 * (rounds + 1) * width
    if learner.info_sample_size is not None and not spec.info_private:
        per_block += learner.info_sample_size * per_agent
    action_bytes = fast.action_dtype(k).itemsize
    held = (batch + 1) * action_bytes * spec.padded_agents
    shards = spec.num_shards
    per_device = per_block + deviation_bytes(k) + 64 * 2**20
    if spec.info_private:  # jaxstage.agent_private
        per_device += block * PRIVATE_BYTES_PER_ACTION * k
        if spec.info == "payoffs":  # the own-sums tables: this shard's and everyone's
            table = 8 * k * spec.padded_agents
            held += table + (shards * table if shards > 1 else 0)
        else:  # a batch of best-reply payoffs: XLA fuses each agent's (T, k, k)
            per_device += 4 * min(block * k, private_info.PRIVATE_BATCH_FLOATS)
    return int(held + shards * per_device)


#: Per agent of a block and per action, the private estimates' temporaries (agents
#: path): the sampled counts (or pooled sums and counts) the draws' loop carries, 4
#: bytes each; XLA fuses the rest (tests/test_agents_path.py checks the bound on the
#: CPU).
PRIVATE_BYTES_PER_ACTION = 8


def deviation_bytes(num_actions: int) -> int:
    """The metrics' deviation payoffs (``metrics.deviation_payoffs``): ``k^3`` values at
    once up to ``VECTORISED_DEVIATIONS_UP_TO`` actions, ``k^2`` at a time beyond (with
    their distributions and a few temporaries: 16 bytes each)."""
    k = num_actions
    live = k**3 if k <= VECTORISED_DEVIATIONS_UP_TO else k**2
    return 16 * live


def available_memory_bytes() -> int:
    """Memory the default device can still use (GPU: its limit; CPU: MemAvailable); in a
    distributed run the smallest over the processes, the same number in each, so that
    every process plans, sizes and compiles the same program."""
    return distributed.agreed_min(_local_available_memory_bytes())


def _local_available_memory_bytes() -> int:
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory stats
        stats = {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def memory_available_bytes(platform: str | None = None) -> int:
    """Memory one device of ``platform`` (default: the default backend) can use: this
    process's device's free memory on its own backend (``available_memory_bytes``: a
    GPU's limit less what is in use, a CPU's MemAvailable), else, for a backend this
    process has no device of (a deviceless compile for an H200), that device's memory
    (``agent_stage.device_memory_bytes``). Never the host's memory for a GPU run."""
    platform = jax.default_backend() if platform is None else platform
    if platform == jax.default_backend():
        return available_memory_bytes()
    return agent_stage.device_memory_bytes(platform, available_memory_bytes())


def check_memory(
    spec: RunSpec,
    learner: StageLearning,
    *,
    batch: int = 1,
    limit: int | None = None,
    platform: str | None = None,
) -> None:
    """Refuses a run of ``spec`` (``batch`` rows) estimated to need more memory than
    ``limit`` (bytes of one device; default :func:`memory_available_bytes` of
    ``platform``, the backend the spec's programs run on). Off a CPU each of the
    ``spec.num_shards`` devices has that memory; a CPU's devices share the host's."""
    platform = jax.default_backend() if platform is None else platform
    num_agents, num_actions = spec.num_agents, spec.num_actions
    agents = spec.kernel == "fast" and spec.exploration_path == "agents"
    needed = estimate_memory_bytes(
        num_agents,
        num_actions,
        learner,
        batch,
        spec.kernel,
        spec.block_size,
        spec.event_capacity,
        spec.num_shards,
        spec=spec,
    )
    if spec.replay_events and not agents:  # pass 1's events kept for pass 2 (one row)
        needed += fast.kept_event_bytes(spec)
    per_device = memory_available_bytes(platform) if limit is None else int(limit)
    devices = 1 if platform == "cpu" else spec.num_shards
    available = per_device * devices
    share = distributed.local_share(spec.num_shards) if spec.kernel == "fast" else 1.0
    if share < 1.0:  # a distributed run: each host holds its own shards
        needed = math.ceil(needed * share)
        available = per_device * (1 if platform == "cpu" else math.ceil(devices * share))
    if needed > available:
        path = f"{spec.kernel} kernel"
        if spec.kernel == "fast":
            path = f"fast kernel's {spec.exploration_path} path"
        where = f"{devices} {platform} device(s)" if platform != "cpu" else "the CPU"
        if share < 1.0:
            where = f"each host (which holds {share:.0%} of the population's shards)"
        raise ValueError(
            f"num_agents={num_agents:,} (batch {batch}) needs about {needed / 2**30:.2f} GiB "
            f"with {num_actions} actions, info={learner.info!r} and the {path}, "
            f"but only {available / 2**30:.2f} GiB is available on {where}; use fewer "
            f"agents or a smaller batch"
        )


def parse_initial(initial: Any, num_agents: int, num_actions: int) -> tuple[str, np.ndarray]:
    if isinstance(initial, str):
        if initial != "uniform":
            raise ValueError(
                f"initial must be 'uniform', an action index, a probability vector of "
                f"{num_actions} entries or an integer array of {num_agents} actions; "
                f"got {initial!r}"
            )
        return "uniform", np.zeros((), np.int32)
    if isinstance(initial, (int, np.integer)) and not isinstance(initial, bool):
        action = check_int(initial, "initial action", low=0, high=num_actions - 1)
        return "action", np.asarray(action, np.int32)
    array = np.asarray(initial)
    if array.ndim == 1 and np.issubdtype(array.dtype, np.integer) and array.size == num_agents:
        if array.min() < 0 or array.max() >= num_actions:
            raise ValueError(
                f"initial actions must lie in [0, {num_actions - 1}], got values in "
                f"[{array.min()}, {array.max()}]"
            )
        return "actions", array.astype(np.int32)
    if array.ndim == 1 and array.size == num_actions and np.issubdtype(array.dtype, np.floating):
        probs = array.astype(np.float64)
        if not np.all(np.isfinite(probs)) or np.any(probs < 0) or abs(probs.sum() - 1) > 1e-6:
            raise ValueError(
                f"initial distribution must be non-negative and sum to 1, got {probs.tolist()}"
            )
        return "distribution", (probs / probs.sum()).astype(np.float32)
    raise ValueError(
        f"initial must be 'uniform', an action index in [0, {num_actions - 1}], a float "
        f"probability vector of {num_actions} entries or an integer array of {num_agents} "
        f"actions; got an array of shape {array.shape} and dtype {array.dtype}"
    )


def check_game_params(
    game: AnonymousGame, overrides: dict | None, row: int | None = None
) -> Params:
    """The game's parameters with ``overrides`` merged in, checked as the game's own
    constructor checks them (``game.check_params``); ``row`` names a sweep's row."""
    defaults = game.default_params()
    if overrides is None:
        return defaults
    where = "" if row is None else f" (sweep row {row})"
    if not isinstance(overrides, dict):
        raise TypeError(
            f"game_params{where} must be a dict of parameter values, got {type(overrides).__name__}"
        )
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for game {game.name!r}{where}; valid: "
            f"{sorted(defaults)}"
        )
    merged = {name: np.asarray(value, np.float32) for name, value in defaults.items()}
    for name, value in overrides.items():
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"game parameter {name!r}{where} must be numeric, got {value!r}"
            ) from error
        if array.shape != defaults[name].shape:
            raise ValueError(
                f"game parameter {name!r}{where} must have shape {defaults[name].shape}, got "
                f"{array.shape}"
            )
        merged[name] = array
    try:
        game.check_params(merged)
    except ValueError as error:
        raise ValueError(f"{error}{where}") from None
    return {name: jnp.asarray(value) for name, value in merged.items()}


def chunk_stages(num_stages: int) -> int:
    # About 20 progress updates per run; chunks keep one compiled program per run length.
    return max(1, math.ceil(num_stages / 20))


def _padded(values: np.ndarray, length: int) -> np.ndarray:
    return np.concatenate([values, np.repeat(values[-1:], length - len(values))])


def validate_common(game, learner, num_agents, num_stages, eps, delta, hold_stages):
    if not isinstance(game, AnonymousGame):
        raise TypeError(
            f"game must be an AnonymousGame (see jaxstage.make_game), got {type(game).__name__}"
        )
    if not isinstance(learner, Learner):
        raise TypeError(
            "learner must be a jaxstage learner (StageLearning, EpsGreedy, Exp3 or a "
            f"jaxstage.learner_interface.Learner), got {type(learner).__name__}"
        )
    check_num_actions(game.num_actions, f"num_actions of game {game.name!r}")
    num_agents = check_int(num_agents, "num_agents", low=1, high=MAX_AGENTS)
    num_stages = check_int(num_stages, "num_stages", low=1)
    if not isinstance(learner, StageLearning) and num_agents > MAX_INT32_AGENTS:
        raise ValueError(
            f"num_agents={num_agents:,}: {learner.name} runs on the reference kernel, up to "
            f"{MAX_INT32_AGENTS:,} agents"
        )
    check_sample_counts(learner, num_stages)
    eps = check_real(eps, "eps", low=0.0)
    delta = check_probability(delta, "delta")
    if hold_stages is not None:
        hold_stages = check_int(hold_stages, "hold_stages", low=1, high=num_stages + 1)
    return num_agents, num_stages, eps, delta, hold_stages


def check_sample_counts(learner: StageLearning, num_stages: int) -> None:
    """With sampled payoffs, an agent pools the sample's observations of a stage with its
    own, at most ``(info_sample_size + 1) * stage_length``, in int32 counts: refuse runs
    where they could overflow (rather than let them wrap)."""
    m = learner.info_sample_size
    if m is None or learner.info != "payoffs":
        return
    longest = int(learner.stage_lengths(num_stages).max())
    pooled = (m + 1) * longest
    if pooled > np.iinfo(np.int32).max:
        raise ValueError(
            f"info_sample_size={m:,} with stage_length up to {longest:,} gives up to "
            f"{pooled:,} pooled observations per agent and stage, above the exact int32 "
            f"limit {np.iinfo(np.int32).max:,}; use a smaller sample or shorter stages"
        )


def check_learner_run(learner, initial, num_stages: int) -> None:
    """The learner's own refusals (:meth:`Learner.check_run`), before anything is traced."""
    rounds = int(np.sum(learner.stage_lengths(num_stages), dtype=np.int64))
    learner.check_run(initial=initial, num_rounds=rounds)


def base_spec(game, learner, num_agents, num_stages) -> RunSpec:
    return RunSpec(
        num_agents=num_agents,
        num_actions=game.num_actions,
        type_counts=tuple(int(c) for c in type_counts(game.type_shares, num_agents)),
        info=learner.info,
        info_sample_size=learner.info_sample_size,
        info_noisy=learner.info_noise_std > 0,
        num_stages=num_stages,
        chunk_stages=chunk_stages(num_stages),
        info_private=learner.private_estimates,
        learner=None if isinstance(learner, StageLearning) else type(learner),
    )


def resolve_kernel(
    kernel: str,
    game: AnonymousGame,
    fast_path: str = "auto",
    learner: StageLearning | None = None,
    platform: str | None = None,
) -> str:
    """The kernel a run takes: ``kernel``, or for ``"auto"`` the fast kernel where it
    supports the game and the learner, except private distribution samples of more than
    :data:`PRIVATE_SAMPLES_ON_REFERENCE_FROM` agents on a CPU (``platform``; default the
    default backend), where the reference kernel's multinomial draw is faster."""
    if learner is not None and not learner.runs_on_fast_kernel:
        if kernel == "fast" or fast_path != "auto":
            raise ValueError(
                f"learner {learner.name!r} runs on the reference kernel only (the fast "
                "kernels implement stage learning); use kernel='reference' or 'auto' and "
                "leave fast_path='auto'"
            )
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; valid kernels: {', '.join(KERNELS)}")
        return "reference"
    private = learner is not None and learner.private_estimates
    if private and kernel != "reference" and fast_path not in ("auto", "agents"):
        raise ValueError(
            f"fast_path={fast_path!r}: private information (info_sharing='private') runs on "
            "the fast kernel's agents path only; use fast_path='agents' or 'auto' (or "
            "kernel='reference')"
        )
    platform = jax.default_backend() if platform is None else platform
    if (
        private
        and kernel == "auto"
        and fast_path == "auto"
        and platform == "cpu"
        and learner.info == "distribution"
        and (learner.info_sample_size or 0) > PRIVATE_SAMPLES_ON_REFERENCE_FROM
    ):
        return "reference"
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; valid kernels: {', '.join(KERNELS)}")
    if fast_path not in FAST_PATHS:
        raise ValueError(f"unknown fast_path {fast_path!r}; valid paths: {', '.join(FAST_PATHS)}")
    if fast_path != "auto" and (kernel == "reference" or not fast.supports_fast(game)):
        raise ValueError(
            f"fast_path={fast_path!r} applies to the fast kernel only, and game {game.name!r} "
            f"with kernel={kernel!r} runs the reference kernel; leave fast_path='auto'"
        )
    if kernel == "auto":
        return "fast" if fast.supports_fast(game) else "reference"
    if kernel == "fast" and not fast.supports_fast(game):
        raise ValueError(
            f"kernel='fast' needs the default Gaussian noise model, but game {game.name!r} "
            f"defines its own realized_payoffs; use kernel='reference' (or 'auto')"
        )
    return kernel


def exploration_extremes(
    learners: Sequence[StageLearning], num_stages: int
) -> tuple[float, float, float]:
    """The largest exploration probability, expected explorations per agent and stage
    length of any stage of any row."""
    most_likely, most_events, longest = 0.0, 0.0, 0.0
    for row in learners:
        probs = np.asarray(row.explore_probs(num_stages), np.float64)
        lengths = np.asarray(row.stage_lengths(num_stages), np.float64)
        most_likely = max(most_likely, float(probs.max()))
        most_events = max(most_events, float((probs * lengths).max()))
        longest = max(longest, float(lengths.max()))
    return most_likely, most_events, longest


def event_capacity_for(
    learners: Sequence[StageLearning], num_stages: int, fast_path: str = "auto"
) -> int:
    """The fast kernel's ``event_capacity``: 0 to loop over rounds, else the event slots per
    chunk and batch, sized for the stage with the most expected explorations per agent.

    ``"events"`` needs every stage to explore with probability at most
    ``events.MAX_EVENT_EXPLORE_PROB`` and to be at most ``events.MAX_GRID /
    events.EVENT_CHUNK`` rounds long; ``"auto"`` takes it then and only when
    :func:`events_cheaper` says so.
    """
    most_likely, most_events, longest = exploration_extremes(learners, num_stages)
    too_long = longest * events.EVENT_CHUNK > events.MAX_GRID
    possible = most_likely <= events.MAX_EVENT_EXPLORE_PROB and not too_long
    if fast_path == "events" and not possible:
        raise ValueError(
            f"fast_path='events' needs explore_prob <= {events.MAX_EVENT_EXPLORE_PROB} and "
            f"stage_length <= {events.MAX_GRID // events.EVENT_CHUNK:,} in every stage; got "
            f"explore_prob up to {most_likely:g} and stage_length up to {longest:,.0f}"
        )
    if fast_path == "rounds" or not possible:
        return 0
    if fast_path == "auto" and not events_cheaper(learners, num_stages):
        return 0
    return events.event_capacity(most_events)


#: Shortest mean stage length from which ``fast_path="auto"`` draws exploration as events,
#: by whether agents keep their own payoff estimates. Read off ``benchmarks/throughput.py
#: --preset paths`` (2**20 agents, exploration 0.05, 2-core CPU; docs/performance.md, "Exploration
#: paths and stage lengths"; stage lengths 1, 4, 16, 64): with own estimates events won at
#: every measured stage length and number of actions (at 2 and 3 actions, stage lengths 1
#: and 4, by 45 to 95% in a second run; the previous release's kernel lost there, and
#: took events from 8 with 2 or 3 actions); without own estimates events won from stage
#: length 4 on, and the rounds loop at 1 (by 5 to 48% in this release's run).
EVENTS_FROM_STAGE_LENGTH = {"own": 1, "shared": 4}


def events_cheaper(learners: Sequence[StageLearning], num_stages: int) -> bool:
    """Whether drawing exploration as events is expected to cost less than looping over
    rounds (:data:`EVENTS_FROM_STAGE_LENGTH`); the mean stage length over all stages and
    rows decides, as the cost of both paths is roughly linear in it."""
    own = needs_own_estimates(learners[0].info, learners[0].info_sample_size)
    regime = "own" if own else "shared"
    mean_length = float(np.mean([row.stage_lengths(num_stages).mean() for row in learners]))
    return mean_length >= EVENTS_FROM_STAGE_LENGTH[regime]


#: Largest ``update_prob`` (over a sweep's rows) for which pass 2 of the events path
#: decides for the adopting agents only (``fast.adopter_capacity``); above it, gathering
#: them costs more than it saves. Either way the numbers are the same.
#: ``benchmarks/adopter_filter.py --update-probs 0.1 0.2 0.3`` (2^20 agents, k = 8, stage
#: length 50; medians of 3, filter on against off, 2-core CPU), two runs: +9% and +13% at
#: 0.1, +21% and +3% at 0.2, -11% and +11% at 0.3 (within the machine's noise).
MAX_FILTERED_UPDATE_PROB = 0.2

#: Most memory the fast kernel spends keeping pass 1's exploration events for pass 2
#: (and never more than a quarter of the memory available).
REPLAY_BUDGET_BYTES = 2**29


def kernel_spec(
    kernel: str,
    game: AnonymousGame,
    learner: StageLearning,
    *,
    num_agents: int,
    num_stages: int,
    max_stage_length: int,
    block_size: int | None = None,
    learners: Sequence[StageLearning] | None = None,
    fast_path: str = "auto",
    devices: int | None = None,
    platform: str | None = None,
    memory_bytes: int | None = None,
) -> RunSpec:
    """The run's :class:`RunSpec`; ``platform`` is the backend the run's programs are
    compiled for (``None``: ``jax.default_backend()``), which picks the fast kernel's
    design (a deviceless compile for a GPU passes ``"cuda"``): ``fast_path="auto"`` takes
    the agents path on :data:`AGENTS_PATH_PLATFORMS`. ``memory_bytes`` is one device's
    memory, which sizes the agents path's blocks (``None``: the device's ``bytes_limit``
    or ``agent_stage.DEFAULT_DEVICE_MEMORY`` for the platform; a CPU's available
    memory)."""
    platform = jax.default_backend() if platform is None else platform
    spec = base_spec(game, learner, num_agents, num_stages)
    if spec.info_private and kernel != "reference":  # on the agents path only
        if num_agents > MAX_INT32_AGENTS:
            raise ValueError(
                f"num_agents={num_agents:,}: private information (info_sharing='private') "
                f"runs up to {MAX_INT32_AGENTS:,} agents (the agents path indexes agents in "
                f"int32)"
            )
        fast_path = "agents"
    spec = spec._replace(local_mesh=distributed.is_process_local())
    wide = num_agents > MAX_INT32_AGENTS
    if wide:
        fast_path = _wide_population_path(kernel, num_agents, fast_path)
    if kernel == "reference":
        if devices not in (None, 1):
            raise ValueError(
                f"devices={devices} applies to the fast kernel only; this run takes the "
                f"reference kernel (game {game.name!r}): leave devices unset or 1"
            )
        return spec
    rows = learners or [learner]
    if fast_path == "agents" or (fast_path == "auto" and platform in AGENTS_PATH_PLATFORMS):
        return agents_spec(
            spec,
            rows,
            max_stage_length=max_stage_length,
            block_size=block_size,
            devices=devices,
            platform=platform,
            memory_bytes=memory_bytes,
        )
    event_capacity = event_capacity_for(rows, num_stages, fast_path)
    if block_size is None:
        block_size = fast.choose_block_size(num_agents, game.num_actions, event_capacity)
    block_size = check_int(block_size, "block_size", low=1, high=2**30)
    blocks = math.ceil(num_agents / block_size)
    adopters = adopter_capacity(spec, rows, event_capacity, block_size)
    num_shards = shard_count(devices, blocks)
    padded = math.ceil(blocks / num_shards) * num_shards * block_size  # whole blocks each
    if wide:
        _check_wide_layout(num_agents, block_size, num_shards, padded // num_shards)
    elif padded > MAX_PADDED_AGENTS:
        # Agent indices are int32: every padded agent's index must stay below 2**31.
        raise ValueError(
            f"num_agents={num_agents:,} with block_size={block_size:,} on {num_shards} "
            f"device(s) pads to {padded:,} agents, above the fast kernel's limit of "
            f"{MAX_PADDED_AGENTS:,}; use a block size that divides num_agents more closely "
            f"or fewer devices"
        )
    largest_update_prob = max(row.update_prob for row in rows)
    sized = spec._replace(
        block_size=block_size,
        event_capacity=event_capacity,
        adopter_capacity=adopters,
        num_shards=num_shards,
        adopter_event_capacity=fast.adopter_event_capacity(
            block_size,
            event_capacity,
            exploration_extremes(rows, num_stages)[1],
            largest_update_prob,
        )
        if adopters
        else 0,
    )
    kept_bytes = fast.kept_event_bytes(sized)  # sweeps run their rows one after another
    return sized._replace(
        kernel="fast",
        wide_counts=wide or FORCED_WIDE_COUNTS,
        replay_events=bool(
            event_capacity
            and spec.needs_own_estimates
            and kept_bytes <= min(REPLAY_BUDGET_BYTES, available_memory_bytes() // 4)
        ),
        # Rounded up to a power of two: other stage lengths in the same range reuse the
        # compiled program (the round buffer is the only shape that depends on it).
        max_stage_length=int(2 ** math.ceil(math.log2(max(int(max_stage_length), 1)))),
    )


def _wide_population_path(kernel: str, num_agents: int, fast_path: str) -> str:
    """The fast path of a population past :data:`MAX_INT32_AGENTS` (the loop over
    rounds: the others index agents in int32), or why it cannot run."""
    limit = f"{MAX_INT32_AGENTS:,} (2**31 - 1)"
    if kernel == "reference":
        raise ValueError(
            f"num_agents={num_agents:,} is above the reference kernel's limit of {limit}; "
            f"past it only the fast kernel runs (a game with the default Gaussian noise)"
        )
    if fast_path in ("events", "agents"):
        raise ValueError(
            f"num_agents={num_agents:,} is above the {fast_path} path's limit of {limit}; "
            f"past it the fast kernel runs its loop over rounds: fast_path='rounds' or 'auto'"
        )
    return "rounds"


def _check_wide_layout(num_agents: int, block_size: int, num_shards: int, shard: int) -> None:
    """Past :data:`MAX_INT32_AGENTS` agents: power-of-two blocks (aligned on their size,
    none straddles a multiple of ``2**32``, so a block's agents share the high word of
    their indices) and shards of at most :data:`MAX_PADDED_AGENTS` agents (int32 local
    indices and counts)."""
    if block_size & (block_size - 1):
        raise ValueError(
            f"block_size={block_size:,} must be a power of two past {MAX_INT32_AGENTS:,} "
            f"agents (num_agents={num_agents:,}); leave it unset or pick one"
        )
    if shard > MAX_PADDED_AGENTS:
        least = math.ceil(num_agents / (MAX_PADDED_AGENTS - block_size))
        raise ValueError(
            f"num_agents={num_agents:,} on {num_shards} device(s) puts {shard:,} agents on "
            f"each, above the limit of {MAX_PADDED_AGENTS:,} per device; it needs at least "
            f"{least} devices (on a CPU: jaxstage.use_cpu_cores({least}) before any JAX "
            f"work, or --cpu-devices {least}); {distributed.device_count()} available"
        )


def agents_spec(
    spec: RunSpec,
    rows: Sequence[StageLearning],
    *,
    max_stage_length: int,
    block_size: int | None,
    devices: int | None,
    platform: str,
    memory_bytes: int | None,
) -> RunSpec:
    """:func:`kernel_spec` for the agents path (:mod:`jaxstage.agent_stage`)."""
    n, num_stages = spec.num_agents, spec.num_stages
    longest = max(int(max_stage_length), 1)
    cap = int(2 ** math.ceil(math.log2(longest)))  # <= 2**30: stage lengths are checked
    width = spec.num_types * spec.num_actions
    bins = 2 * cap * width  # pass 1's histogram of departures and arrivals
    if block_size is None:
        num_shards = shard_count(devices, n)
        if memory_bytes is None:
            memory_bytes = agent_stage.device_memory_bytes(platform, available_memory_bytes())
        tile = agent_stage.choose_tile_size(2**30, bins, platform)
        multiple = 128 if platform == "cpu" else tile
        block_size = agent_stage.choose_agent_block(
            n, spec.num_actions, num_shards, int(memory_bytes), multiple
        )
    block_size = check_int(block_size, "block_size", low=1, high=2**30)
    blocks = math.ceil(n / block_size)
    num_shards = shard_count(devices, blocks)
    padded = math.ceil(blocks / num_shards) * num_shards * block_size
    if padded > MAX_PADDED_AGENTS:
        raise ValueError(
            f"num_agents={n:,} with block_size={block_size:,} on {num_shards} "
            f"device(s) pads to {padded:,} agents, above the fast kernel's limit of "
            f"{MAX_PADDED_AGENTS:,}; use a block size that divides num_agents more closely "
            f"or fewer devices"
        )
    most_likely = exploration_extremes(rows, num_stages)[0]
    num_events = agent_events.max_events(padded * num_stages * len(rows), longest, most_likely)
    if FORCED_AGENT_EVENTS is not None:
        num_events = max(1, min(int(FORCED_AGENT_EVENTS), longest))
    return spec._replace(
        kernel="fast",
        fast_path="agents",
        block_size=block_size,
        num_shards=num_shards,
        max_stage_length=cap,
        agent_events=num_events,
        tile_size=agent_stage.choose_tile_size(block_size, bins, platform),
    )


def shard_count(devices: int | None, blocks: int) -> int:
    """Devices the fast kernel splits the population over: ``devices``, or by default
    every device of the default backend (of every process in a distributed run), at most
    one per block of agents. The numbers do not depend on the choice.

    In a run of ``P > 1`` processes the count is 1 (every process runs the whole
    population, as one process would) or at least ``P`` (every process holds shards:
    ``distributed.mesh_devices``); by default 1 when the population has fewer than ``P``
    blocks."""
    count = distributed.device_count()
    processes = distributed.mesh_process_count()
    if devices is None:
        shards = max(1, min(count, blocks))
        return 1 if shards < processes else shards
    devices = check_int(devices, "devices", low=1, high=count)
    if 1 < devices < processes:
        raise ValueError(
            f"devices must be 1 or in [{processes}, {count}] in a run of {processes} "
            f"processes (each process must hold a shard), got {devices}"
        )
    return devices


def adopter_capacity(spec: RunSpec, rows, event_capacity: int, block_size: int) -> int:
    """``RunSpec.adopter_capacity``: 0 (decide for every agent) unless the events path
    keeps own estimates and every row's ``update_prob`` is at most
    :data:`MAX_FILTERED_UPDATE_PROB`."""
    largest = max(row.update_prob for row in rows)
    if not (event_capacity and spec.needs_own_estimates and largest <= MAX_FILTERED_UPDATE_PROB):
        return 0
    return fast.adopter_capacity(block_size, largest)


def types_array(spec: RunSpec) -> jax.Array | None:
    if spec.num_types == 1 or spec.kernel == "fast":
        return None
    return jnp.asarray(np.repeat(np.arange(spec.num_types, dtype=np.int32), spec.type_counts))


def run_params(
    game_params,
    learner,
    num_stages,
    padded,
    eps,
    explore=None,
    update=None,
    length=None,
    info_noise=None,
) -> RunParams:
    explore_probs = learner.explore_probs(num_stages) if explore is None else explore
    lengths = learner.stage_lengths(num_stages) if length is None else length
    return RunParams(
        game=game_params,
        explore_prob=jnp.asarray(_padded(np.asarray(explore_probs, np.float32), padded)),
        stage_length=jnp.asarray(_padded(np.asarray(lengths, np.int32), padded)),
        update_prob=jnp.asarray(learner.update_prob if update is None else update, jnp.float32),
        info_noise_std=jnp.asarray(
            learner.info_noise_std if info_noise is None else info_noise, jnp.float32
        ),
        eps=jnp.asarray(eps, jnp.float32),
        learner=_traced_learner_params(learner),
    )


def _traced_learner_params(learner):
    """The learner's traced hyperparameters (``None`` for stage learning: its programs
    take none)."""
    if isinstance(learner, StageLearning):
        return None
    return {name: jnp.asarray(v, jnp.float32) for name, v in learner.traced_params().items()}
