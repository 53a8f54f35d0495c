"""The driver: an explicit simulation state, a step API, and the chunks, checks and
progress of a run.

A :class:`Simulation` owns the static configuration of a run (game, learner, population,
kernel, devices, horizon); :meth:`Simulation.init` gives the :class:`SimulationState` of
stage 0 and :meth:`Simulation.advance` moves a state on by some stages, returning the
:class:`~jaxstage.records.StageRecords` of those stages. Random numbers and schedules are
keyed by the absolute stage index the state carries, so a run advanced in one call or in
several (7 + 13 stages, or resumed from a checkpoint) gives bitwise the same numbers.
:func:`jaxstage.simulate` and :func:`jaxstage.sweep` are this pipeline run to the end.

Within an advance the stages run in chunks of ``spec.chunk_stages`` (one compiled
program each, about 20 per run, one host synchronisation per chunk): after each chunk the
driver checks the payoffs for non-finite values (:mod:`jaxstage.finiteness`) and, on the
agents path, that no agent needed more than the events computed
(:class:`EventsOverflowError`, then the advance is repeated with twice as many: the
numbers do not depend on it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import checkpoint_parts, distributed, fast, kernels, plan
from jaxstage._validation import check_int
from jaxstage.finiteness import check_metrics, check_stages
from jaxstage.games import AnonymousGame, Params
from jaxstage.learner_interface import Learner
from jaxstage.learners import learner_label
from jaxstage.metrics import CountMetrics
from jaxstage.records import SimulationResult, StageRecords, assemble_result, concatenate_stages
from jaxstage.spec import RunParams, RunSpec
from jaxstage.wide import host_counts

__all__ = ["Simulation", "SimulationState", "StageRecords", "EventsOverflowError"]


class SimulationState(NamedTuple):
    """A population between stages (a pytree; a sweep's has a leading row axis).

    Attributes:
        actions: the stage actions. Fast kernel: ``(spec.padded_agents,)`` int8 (int16
            past 128 actions), padded to whole blocks per device (the padding is never
            counted); reference kernel: ``(num_agents,)`` int32. A device array.
        stage: ``()`` int32, the stages played so far: the absolute index of the next
            stage, which keys its random numbers and schedules.
        seed: ``()`` uint32, the run's seed.
        key: the random key of the stages as raw uint32 data: fast kernel ``()`` (the
            seed itself: its counter-based streams are keyed by it), reference kernel
            ``(2,)`` (``jax.random.key_data`` of the key split off the seed).
        metrics: the :class:`~jaxstage.metrics.CountMetrics` of ``actions`` (host
            arrays), e.g. ``state.metrics.best_reply_fraction``.
        learner_state: ``None`` for stage learning; for another learner
            (:mod:`jaxstage.learner_interface`) its per-agent state, whose ``actions``
            (the current actions, int32) are ``actions``.
    """

    actions: jax.Array
    stage: np.ndarray
    seed: np.ndarray
    key: jax.Array
    metrics: CountMetrics
    learner_state: Any = None


class EventsOverflowError(Exception):
    """Some agent of a chunk needed more than ``spec.agent_events`` events (agents path):
    the stages are repeated with more. Raised out of an advance only when its input
    state was donated (``donate=True``) and cannot be replayed."""


# --------------------------------------------------------------------------- pipeline


def progress_bar(total: int, enabled: bool, description: str):
    """A tqdm bar of ``total`` stages (disabled unless ``enabled``; shown by process 0
    only in a distributed run)."""
    from tqdm.auto import tqdm

    shown = enabled and distributed.is_main_process()
    return tqdm(total=total, unit="stage", disable=not shown, desc=description, leave=False)


def _finiteness_check(game, spec: RunSpec, row_params: Sequence[Params], batched: bool):
    """``check(metrics, record, first, done)``: raises
    :class:`~jaxstage.finiteness.NonFinitePayoffError` at the first stage (of the first
    row) whose payoffs or metrics were not finite; ``record`` is ``None`` for the initial
    state."""

    def check(metrics, record, first, done):
        for i, params in enumerate(row_params):
            row = i if batched else None

            def take(array, stages=None, i=i):
                array = np.asarray(array)
                array = array[i] if batched else array
                return array if stages is None else array[:stages]

            if record is None:  # the initial state: one unbatched-in-time entry
                states = (take(metrics.expected_payoffs)[None], take(metrics.nash_gap)[None])
                counts = take(metrics.counts_by_type)[None]
                check_metrics(game, params, *states, counts, 0, spec.num_agents, row)
                continue
            codes, at = take(record.nonfinite, done), take(record.nonfinite_counts, done)
            check_stages(game, params, codes, at, first, spec.num_agents, row)
            check_metrics(
                game,
                params,
                take(metrics.expected_payoffs, done),
                take(metrics.nash_gap, done),
                take(metrics.counts_by_type, done),
                first + 1,
                spec.num_agents,
                row,
            )

    return check


def chunk_spec(spec: RunSpec, first: int, end: int) -> RunSpec:
    """The spec the chunk of stages from ``first`` (of an advance to ``end``) is compiled
    with: ``spec`` when the chunk fits, or when it ends the run where the compiled chunk
    skips the stages past the horizon (a conditional, compiled in only when the horizon
    is not a whole number of chunks, and never on the agents path: a GPU would copy its
    predicate to the host every stage); else a chunk of its own (static) length
    ``end - first``, so that an advance that stops inside a chunk plays none of the
    chunk's later stages. The numbers do not depend on the chunking: every stage is keyed
    by its absolute index."""
    fits = first + spec.chunk_stages <= end
    skips_past_horizon = (
        spec.num_stages % spec.chunk_stages != 0 and spec.exploration_path != "agents"
    )
    if fits or (end == spec.num_stages and skips_past_horizon):
        return spec
    return spec._replace(chunk_stages=end - first)


@dataclasses.dataclass
class Pipeline:
    """The compiled programs of one run or one sweep (``batched``: rows on a leading
    axis) with their static and traced inputs: what :class:`Simulation` and
    :func:`jaxstage.sweep` drive. ``spec`` may grow ``agent_events`` on the agents path
    (:meth:`advance` doubles it when some agent needed more)."""

    game: AnonymousGame
    spec: RunSpec
    params: RunParams
    kind: str
    payload: jax.Array
    types: jax.Array | None
    row_game_params: Sequence[Params]
    batched: bool
    description: str

    @property
    def fast(self) -> bool:
        return self.spec.kernel == "fast"

    def _programs(self):
        programs = kernels.FAST if self.fast else kernels.REFERENCE
        return programs[2:] if self.batched else programs[:2]

    def _metrics_of(self, counts):
        """The fast kernel's metrics of host ``(..., stages, T, k)`` counts (int64 with
        ``spec.wide_counts``: the metrics program takes them as float32, which JAX's
        32-bit integers cannot hold exactly, and ``counts_by_type`` keeps them exact)."""
        fn = kernels.jit_stage_metrics_batched if self.batched else kernels.jit_stage_metrics
        if not self.spec.wide_counts:
            return fn(self.game, self.params, counts)
        metrics = fn(self.game, self.params, np.asarray(counts).astype(np.float32))
        return metrics._replace(counts_by_type=np.asarray(counts, np.int64))

    def init(self, seeds: np.ndarray) -> SimulationState:
        """The state at stage 0 for ``seeds`` (``()`` or ``(rows,)`` uint32)."""
        seeds = np.asarray(seeds, np.uint32)
        if self.fast:
            key = jnp.asarray(seeds)
        else:
            key = jax.vmap(jax.random.key)(seeds) if self.batched else jax.random.key(seeds)
        initial = self._programs()[0]
        actions, stages_key, metrics = initial(
            self.game, self.spec, self.params, self.kind, self.payload, self.types, key
        )
        if self.fast:
            counts = host_counts(jax.device_get(metrics))[..., None, :, :]  # one "stage"
            first = (lambda m: m[:, 0]) if self.batched else (lambda m: m[0])
            metrics = jax.tree.map(first, self._metrics_of(counts))
        metrics = jax.device_get(metrics)
        check = _finiteness_check(self.game, self.spec, self.row_game_params, self.batched)
        check(metrics, None, 0, 1)
        key_data = stages_key if self.fast else jax.random.key_data(stages_key)
        if self.spec.learner is not None:  # the learner's state, with its current actions
            return SimulationState(actions.actions, np.int32(0), seeds, key_data, metrics, actions)
        return SimulationState(actions, np.int32(0), seeds, key_data, metrics)

    def _chunk(self, spec: RunSpec, actions, key, first: int):
        """One chunk: new actions and its host records (metrics included); raises
        :class:`EventsOverflowError` on the agents path when some agent needed more
        events than computed."""
        chunk = self._programs()[1]
        if self.fast and not self.batched and spec.chunk_stages == 1:
            chunk = kernels.fast_single_stage_chunk
        actions, record = chunk(
            self.game, spec, self.params, actions, self.types, key, jnp.int32(first)
        )
        if spec.exploration_path == "agents" and self.fast:
            counts, overflow = record.metrics
            if np.any(np.asarray(jax.device_get(overflow)) > 0):
                raise EventsOverflowError
            record = record._replace(metrics=counts)
        record = host_counts(jax.device_get(record))
        if self.fast:
            record = record._replace(metrics=jax.device_get(self._metrics_of(record.metrics)))
        return actions, record

    def advance(
        self,
        state: SimulationState,
        num_stages: int,
        *,
        donate: bool = False,
        bar: Any = None,
    ) -> tuple[SimulationState, StageRecords]:
        """``state`` moved on by ``num_stages`` stages, and their records. ``donate``
        lets the first chunk reuse the buffer of ``state.actions`` (one copy of the
        population less at peak; ``state`` is then unusable); otherwise an overflow of
        the agents path's events is replayed from ``state`` with twice the events."""
        while True:
            carried = state.actions if state.learner_state is None else state.learner_state
            actions = carried if donate else jax.tree.map(jnp.copy, carried)
            try:
                return self._advance(state, actions, num_stages, bar)
            except EventsOverflowError:
                self._grow_events()
                if donate:
                    raise

    def _grow_events(self) -> None:
        spec = self.spec
        if spec.agent_events >= spec.max_stage_length:  # cannot happen: positions grow
            raise RuntimeError("agents path: more events than rounds in a stage")
        events = min(2 * spec.agent_events, spec.max_stage_length)
        self.spec = spec._replace(agent_events=events)

    def _advance(self, state, actions, num_stages, bar):
        start = int(state.stage)
        end = start + num_stages
        key = state.key if self.fast else jax.random.wrap_key_data(state.key)
        check = _finiteness_check(self.game, self.spec, self.row_game_params, self.batched)
        records, first = [], start
        while first < end:
            spec = chunk_spec(self.spec, first, end)
            actions, record = self._chunk(spec, actions, key, first)
            done = min(spec.chunk_stages, end - first)
            check(record.metrics, record, first, done)
            records.append(_trim(record, done, self.batched))
            first += done
            if bar is not None:
                bar.update(done)
                share = np.asarray(record.metrics.best_reply_fraction)[..., done - 1]
                bar.set_postfix(best_reply=f"{float(np.mean(share)):.3f}")
        stages = concatenate_stages(records, batched=self.batched)
        last = jax.tree.map(lambda x: x[:, -1] if self.batched else x[-1], stages.metrics)
        if self.spec.learner is not None:
            new_state = SimulationState(
                actions.actions, np.int32(end), state.seed, state.key, last, actions
            )
        else:
            new_state = SimulationState(actions, np.int32(end), state.seed, state.key, last)
        return new_state, StageRecords(start, state.seed, state.metrics, stages, self.batched)


def _trim(record, stages: int, batched: bool):
    """A chunk's host records cut to its first ``stages`` stages."""
    return jax.tree.map(lambda x: x[:, :stages] if batched else x[:stages], record)


# --------------------------------------------------------------------------- the run


def versions() -> dict[str, str]:
    """The versions (and device) a run records in its configuration."""
    import optax

    from jaxstage import __version__

    return {
        "jaxstage": __version__,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else "",
        "numpy": np.__version__,
        "optax": optax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
    }


class RunOptions(NamedTuple):
    """What a run's configuration records besides the game, learner and spec."""

    num_agents: int
    num_stages: int
    eps: float
    delta: float
    hold_stages: int | None
    initial: Any
    game_params: Params
    references: Sequence[np.ndarray]


def run_config(
    game: AnonymousGame,
    learner: Learner,
    options: RunOptions,
    spec: RunSpec,
    *,
    seed: int,
) -> dict[str, Any]:
    """The JSON-friendly configuration a result records (``result.config``)."""
    initial = options.initial
    initial_text = initial if isinstance(initial, (str, int)) else np.asarray(initial).tolist()
    if isinstance(initial_text, list) and len(initial_text) > 64:
        initial_text = f"array of {len(initial_text)} actions"
    return {
        "game": game.config(),
        "action_names": None if game.action_names is None else list(game.action_names),
        "type_names": None if game.type_names is None else list(game.type_names),
        "game_params": {k: np.asarray(v).tolist() for k, v in options.game_params.items()},
        "learner": learner.config(),
        "num_agents": options.num_agents,
        "num_stages": options.num_stages,
        "seed": seed,
        "eps": options.eps,
        "delta": options.delta,
        "hold_stages": options.hold_stages,
        "initial": initial_text,
        "reference_equilibria": [np.asarray(e).tolist() for e in options.references],
        "kernel": spec.kernel,
        "block_size": spec.block_size if spec.kernel == "fast" else None,
        "devices": spec.num_shards,
        "processes": jax.process_count(),
        "fast_path": None if spec.kernel != "fast" else spec.exploration_path,
        "versions": versions(),
    }


def references_for(game: AnonymousGame, game_params_overridden: bool, reference: Any):
    """The reference equilibria of the L1 distance: ``reference``, else the game's own
    (none when its parameters are overridden: they describe the constructor's)."""
    if reference is not None:
        refs = np.atleast_2d(np.asarray(reference, dtype=np.float64))
        if refs.shape[1] != game.num_actions:
            raise ValueError(
                f"reference must have {game.num_actions} entries per equilibrium, "
                f"got shape {refs.shape}"
            )
        return list(refs)
    return [] if game_params_overridden else game.equilibria()


class Simulation:
    """One run's static configuration, and the step API over its state.

    Args:
        game, learner, num_agents: as in :func:`jaxstage.simulate`.
        num_stages: the horizon: schedules are evaluated and the kernel is sized for
            stages ``0 .. num_stages - 1``, and no state advances past it.
        eps, delta, hold_stages, initial, game_params, reference, memory_limit_bytes,
            kernel, block_size, fast_path, devices: as in :func:`jaxstage.simulate`
            (validated here, before anything is traced).

    Example:
        >>> import jaxstage as js
        >>> game = js.make_game("congestion", num_actions=3)
        >>> learner = js.StageLearning(stage_length=20, explore_prob=0.1, update_prob=0.2)
        >>> sim = js.Simulation(game, learner, num_agents=10_000, num_stages=20)
        >>> state = sim.init(seed=0)
        >>> state, first = sim.advance(state, num_stages=7)
        >>> state, rest = sim.advance(state, num_stages=13)
        >>> result = sim.result(first + rest)  # bitwise js.simulate(..., 20, seed=0)
        >>> int(state.stage), result.distribution.shape
        (20, (21, 3))
    """

    def __init__(
        self,
        game: AnonymousGame,
        learner: Learner,
        num_agents: int,
        num_stages: int,
        *,
        eps: float = 0.05,
        delta: float = 0.05,
        hold_stages: int | None = None,
        initial: Any = "uniform",
        game_params: dict[str, Any] | None = None,
        reference: Any = None,
        memory_limit_bytes: int | None = None,
        kernel: str = "auto",
        block_size: int | None = None,
        fast_path: str = "auto",
        devices: int | None = None,
    ) -> None:
        num_agents, num_stages, eps, delta, hold_stages = plan.validate_common(
            game, learner, num_agents, num_stages, eps, delta, hold_stages
        )
        kind, payload = plan.parse_initial(initial, num_agents, game.num_actions)
        plan.check_learner_run(learner, initial, num_stages)
        params_game = plan.check_game_params(game, game_params)
        references = references_for(game, game_params is not None, reference)
        kernel = plan.resolve_kernel(kernel, game, fast_path, learner)
        lengths = learner.stage_lengths(num_stages)
        spec = plan.kernel_spec(
            kernel,
            game,
            learner,
            num_agents=num_agents,
            num_stages=num_stages,
            max_stage_length=lengths.max(),
            block_size=block_size,
            fast_path=fast_path,
            devices=devices,
        )
        plan.check_memory(spec, learner, limit=memory_limit_bytes)
        padded = math.ceil(num_stages / spec.chunk_stages) * spec.chunk_stages
        self.game, self.learner = game, learner
        # What rebuilds this simulation (with the game and learner): a checkpoint's. The
        # kernel and path are the resolved ones (they fix the random numbers); blocks and
        # devices are not kept: the numbers do not depend on them.
        self.arguments = {
            "num_agents": num_agents,
            "num_stages": num_stages,
            "eps": eps,
            "delta": delta,
            "hold_stages": hold_stages,
            "initial": initial,
            "game_params": game_params,
            "reference": reference,
            "kernel": kernel,
            "fast_path": spec.exploration_path if kernel == "fast" else "auto",
        }
        self.options = RunOptions(
            num_agents, num_stages, eps, delta, hold_stages, initial, params_game, references
        )
        self.pipeline = Pipeline(
            game=game,
            spec=spec,
            params=plan.run_params(params_game, learner, num_stages, padded, eps),
            kind=kind,
            payload=jnp.asarray(payload),
            types=plan.types_array(spec),
            row_game_params=[params_game],
            batched=False,
            description=f"{game.name} {learner_label(learner)}",
        )

    @property
    def spec(self) -> RunSpec:
        """The static configuration the kernels are compiled with."""
        return self.pipeline.spec

    @property
    def num_stages(self) -> int:
        """The horizon."""
        return self.options.num_stages

    def init(self, seed: int = 0) -> SimulationState:
        """The state at stage 0: the initial actions drawn from ``seed`` (in
        ``[0, 2**32 - 1]``)."""
        seed = check_int(seed, "seed", low=0, high=2**32 - 1)
        return self.pipeline.init(np.uint32(seed))

    def advance(
        self,
        state: SimulationState,
        num_stages: int | None = None,
        *,
        progress: bool = False,
        donate: bool = False,
    ) -> tuple[SimulationState, StageRecords]:
        """``state`` moved on by ``num_stages`` stages (default: to the horizon).

        Args:
            state: a state of this simulation (from :meth:`init`, :meth:`advance` or a
                checkpoint).
            num_stages: stages to play, in ``[1, horizon - state.stage]``.
            progress: show a progress bar.
            donate: let the kernel reuse ``state.actions``' buffer (saves one copy of
                the population's actions; ``state`` cannot be used again).

        Returns:
            The new state and the :class:`~jaxstage.records.StageRecords` of the stages
            played (records of consecutive advances add up: ``first + rest``).
        """
        self._check_state(state)
        return advance_to_horizon(
            self.pipeline, state, num_stages, owner="simulation", progress=progress, donate=donate
        )

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, SimulationState):
            raise TypeError(f"state must be a SimulationState, got {type(state).__name__}")
        expected = (self.spec.padded_agents if self.spec.kernel == "fast" else None) or (
            self.options.num_agents
        )
        if tuple(np.shape(state.actions)) != (expected,):
            raise ValueError(
                f"state.actions has shape {tuple(np.shape(state.actions))}, but this "
                f"simulation's kernel holds ({expected},): the state belongs to another "
                f"simulation"
            )
        if (state.learner_state is None) != (self.spec.learner is None):
            raise ValueError("the state belongs to a simulation of another learner")

    def result(
        self, records: StageRecords, *, final: SimulationState | None = None
    ) -> SimulationResult:
        """The :class:`~jaxstage.records.SimulationResult` of ``records`` (index 0: the
        state they start from); ``final`` (the state they end at) keeps its actions in
        ``final_actions``."""
        if not isinstance(records, StageRecords) or records.batched:
            raise TypeError("records must be the StageRecords of this simulation's advance")
        first, last = records.first_stage, records.last_stage
        if last > self.num_stages:
            raise ValueError(f"records reach stage {last}, past the horizon {self.num_stages}")
        config = run_config(
            self.game, self.learner, self.options, self.spec, seed=int(records.seed)
        )
        if first:
            config["first_stage"] = first
        lengths = self.learner.stage_lengths(self.num_stages)
        return assemble_result(
            records,
            row=None,
            spec=self.spec,
            lengths=lengths[first:last],
            rounds_before=int(np.sum(lengths[:first], dtype=np.int64)),
            explore=self.learner.explore_probs(self.num_stages)[first:last],
            config=config,
            equilibria=self.options.references,
            delta=self.options.delta,
            hold_stages=self.options.hold_stages,
            final_actions=None if final is None else self.final_actions(final),
        )

    def state_at(
        self, actions: np.ndarray, *, stage: int, seed: int, key: np.ndarray, metrics: CountMetrics
    ) -> SimulationState:
        """The state of ``(num_agents,)`` stage ``actions`` at ``stage`` (a checkpoint's):
        padded to this simulation's blocks (padding agents are never counted, and no
        agent's numbers depend on them) and put on its devices."""
        n = self.options.num_agents
        if tuple(np.shape(actions)) != (n,):
            raise ValueError(f"actions must have shape ({n},), got {tuple(np.shape(actions))}")
        stage = check_int(stage, "stage", low=0, high=self.num_stages)
        if self.spec.kernel == "fast":
            key = np.asarray(key, np.uint32).reshape(())
            placed = placed_actions(self.spec, self.game.num_actions, actions)
        else:
            key = np.asarray(key, np.uint32).reshape(2)
            placed = jnp.asarray(np.asarray(actions).astype(np.int32))
        return SimulationState(placed, np.int32(stage), np.uint32(seed), jnp.asarray(key), metrics)

    def final_actions(self, state: SimulationState) -> np.ndarray:
        """The ``(num_agents,)`` stage actions of ``state`` (padding dropped), int8 (int16
        past 128 actions) on both kernels: one byte per agent, not four (cast before
        arithmetic that could leave the range, e.g. ``actions.astype(np.int64) * w``)."""
        return host_actions(state.actions, self.options.num_agents, self.game.num_actions)


def placed_actions(spec: RunSpec, num_actions: int, actions) -> jax.Array:
    """A checkpoint's ``(..., num_agents)`` stage actions (an array, memory-mapped or not,
    or :class:`~jaxstage.checkpoint_parts.ActionParts`) padded to ``spec``'s blocks and
    put on its devices. Over several shards they are placed shard by shard: no padded copy
    of the whole population on the host, and each process reads only its own shards."""
    dtype = fast.action_dtype(num_actions)
    sharding = fast.actions_sharding(spec, ndim=len(actions.shape))
    if sharding is not None:
        return checkpoint_parts.placed(actions, spec.padded_agents, sharding, dtype)
    padded = np.zeros((*actions.shape[:-1], spec.padded_agents), dtype)  # one shard
    padded[..., : actions.shape[-1]] = np.asarray(actions)
    return jnp.asarray(padded)


def host_actions(actions: jax.Array, num_agents: int, num_actions: int) -> np.ndarray:
    """A state's ``(..., padded)`` stage actions as host ``(..., num_agents)`` int8
    (int16 past 128 actions), gathered from every process (a view where the host copy
    allows: no copy of the whole population beyond the one gathered)."""
    host = distributed.host_array(actions)[..., :num_agents]
    return host.astype(fast.action_dtype(num_actions), copy=False)


def advance_to_horizon(
    pipeline: Pipeline,
    state: SimulationState,
    num_stages: int | None,
    *,
    owner: str,
    progress: bool,
    donate: bool,
) -> tuple[SimulationState, StageRecords]:
    """``state`` advanced by ``num_stages`` (default: to the horizon), checked to stay
    within the horizon of the ``owner`` (``"simulation"``, ``"sweep"``: for messages)."""
    horizon = pipeline.spec.num_stages
    left = horizon - int(state.stage)
    if left < 1:
        raise ValueError(
            f"the state is at stage {int(state.stage)}, the horizon of this {owner} "
            f"(num_stages={horizon}): nothing is left to advance"
        )
    num_stages = left if num_stages is None else num_stages
    num_stages = check_int(num_stages, "num_stages", low=1, high=left)
    with progress_bar(num_stages, progress, pipeline.description) as bar:
        return pipeline.advance(state, num_stages, donate=donate, bar=bar)


def run_to_end(
    pipeline: Pipeline,
    state: SimulationState,
    records: StageRecords | None = None,
    *,
    progress: bool,
    restart: Callable[[], tuple[SimulationState, StageRecords | None]],
    on_advance: Callable[[SimulationState, StageRecords], None] | None = None,
    every: int | None = None,
) -> tuple[SimulationState, StageRecords]:
    """``state`` (with the ``records`` that led to it, if any) advanced to the horizon,
    in steps of ``every`` stages (default: one step), each step's input donated;
    ``on_advance(state, records so far)`` after each step (a checkpoint). An overflow of
    the agents path's events starts again from ``restart()`` (a state and its records:
    the run's start, or its last checkpoint) with twice the events."""
    total = pipeline.spec.num_stages
    while True:
        try:
            left = total - int(state.stage)
            with progress_bar(left, progress, pipeline.description) as bar:
                while int(state.stage) < total:
                    step = total - int(state.stage) if every is None else every
                    step = min(step, total - int(state.stage))
                    state, new = pipeline.advance(state, step, donate=True, bar=bar)
                    records = new if records is None else records + new
                    if on_advance is not None:
                        on_advance(state, records)
            return state, records
        except EventsOverflowError:
            state, records = restart()
