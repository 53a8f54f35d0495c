"""The compiled programs a run would launch, enumerated without running it.

:func:`simulate_programs` and :func:`sweep_programs` go through the same validation,
:class:`~jaxstage.spec.RunSpec` and traced parameters as :func:`jaxstage.simulate` and
:func:`jaxstage.sweep` (the private helpers of :mod:`jaxstage.simulation`, imported, not
copied) and return each jitted object those would call, with its arguments: the kernel's
initial-state and chunk programs (``kernels.FAST`` or ``kernels.REFERENCE``) and,
for the fast kernel, the metrics programs run on their counts. Every array argument is a
``jax.ShapeDtypeStruct`` (no population is ever allocated: 10^9 agents cost nothing), so a
program can be lowered for any backend, e.g. for CUDA with the CPU jaxlib::

    program.fn.trace(*program.args).lower(lowering_platforms=("cuda",))

or, with ``sharding`` a ``NamedSharding`` on a compile-only GPU topology (see
``scripts/gpu_compile.py``), compiled for it with ``.lower().compile()``. A fast-kernel
program of more than one shard holds a ``shard_map`` over ``fast.agent_mesh``, the first
devices of ``jax.devices()``: it lowers (on the CPU devices) but cannot be compiled for a
topology's devices; one shard has no ``shard_map``.

Example:
    >>> import jaxstage as js
    >>> from jaxstage.programs import simulate_programs
    >>> game = js.make_game("congestion", num_actions=3)
    >>> learner = js.StageLearning(stage_length=10, explore_prob=0.05)
    >>> programs = simulate_programs(game, learner, 1000, 4, devices=1)
    >>> [p.name for p in programs]
    ['initial', 'initial_metrics', 'chunk', 'chunk_metrics']
    >>> "stablehlo" in lower(programs[2], "cuda").as_text()
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxstage import engine, kernels, plan
from jaxstage.games import AnonymousGame
from jaxstage.learner import StageLearning
from jaxstage.spec import RunSpec

__all__ = ["Program", "simulate_programs", "sweep_programs", "lower", "chunk_program"]


class Program(NamedTuple):
    """One compiled program of a run, as the run calls it.

    ``fn(*args, **kwargs)`` is the call the run makes (static arguments, the game and the
    spec, included), ``calls`` times a run. ``per_chunk`` programs run once per chunk of
    stages (``spec.chunk_stages`` of them; the agents path gives a shorter last chunk a
    program of its own, ``"chunk_last"``), the others once per run; ``host_syncs`` is how
    many times the host waits for device values after each call (``jax.device_get`` in
    the driver).
    """

    name: str  # "initial", "initial_metrics", "chunk", "chunk_metrics", "chunk_last"...
    fn: Callable[..., Any]  # the very jitted object the run calls
    args: tuple[Any, ...]  # its arguments; arrays as jax.ShapeDtypeStruct
    kwargs: dict[str, Any]
    spec: RunSpec  # the static configuration it is compiled with
    calls: int  # times a run of spec.num_stages stages calls it
    per_chunk: bool  # called for every chunk of stages (else once a run)
    host_syncs: int  # the driver's waits for device values after each call


def lower(program: Program, platform: str | None = None) -> jax.stages.Lowered:
    """``program`` traced and lowered; for ``platform`` (e.g. ``"cuda"``, any jaxlib),
    else for the devices of its arguments' shardings (or the default backend)."""
    traced = program.fn.trace(*program.args, **program.kwargs)
    if platform is None:
        return traced.lower()
    return traced.lower(lowering_platforms=(platform,))


def chunk_program(programs: Sequence[Program]) -> Program:
    """The kernel's chunk program (``"chunk"``) among ``programs``."""
    return next(p for p in programs if p.name == "chunk")


def simulate_programs(
    game: AnonymousGame,
    learner: StageLearning,
    num_agents: int,
    num_stages: int,
    *,
    kernel: str = "auto",
    fast_path: str = "auto",
    devices: int | None = None,
    block_size: int | None = None,
    platform: str | None = None,
    device_memory_bytes: int | None = None,
    initial: Any = "uniform",
    sharding: jax.sharding.Sharding | None = None,
    check_memory: bool = True,
) -> list[Program]:
    """The programs ``simulate(game, learner, num_agents, num_stages, ...)`` would run.

    Args:
        game, learner, num_agents, num_stages, kernel, fast_path, devices, block_size,
        initial: as in :func:`jaxstage.simulate`.
        platform: the backend the programs are meant for (``plan.kernel_spec``'s
            ``platform``: it picks the fast kernel's design); default the default backend.
        device_memory_bytes: one device's memory: sizes the agents path's blocks
            (``plan.kernel_spec``'s ``memory_bytes``), and a run estimated to need
            more is refused as ``simulate`` would; default: the memory available when
            ``platform`` is the default backend, else that platform's device memory
            (``plan.memory_available_bytes``: never this host's memory for another
            backend).
        sharding: the sharding of every array argument (e.g. a ``NamedSharding`` on a
            compile-only topology's mesh); default none (the default device).
        check_memory: ``False`` to enumerate the programs of a run that ``simulate``
            would refuse for its estimated memory (to see what it would launch).

    Returns:
        In call order: ``initial``, ``initial_metrics`` (fast kernel), ``chunk``,
        ``chunk_metrics`` (fast kernel), and ``chunk_last`` and ``chunk_last_metrics``
        when the last chunk has a program of its own.
    """
    num_agents, num_stages, eps, _, _ = plan.validate_common(
        game, learner, num_agents, num_stages, 0.05, 0.05, None
    )
    kind, payload = plan.parse_initial(initial, num_agents, game.num_actions)
    params_game = plan.check_game_params(game, None)
    kernel = plan.resolve_kernel(kernel, game, fast_path, learner, platform)
    spec = plan.kernel_spec(
        kernel,
        game,
        learner,
        num_agents=num_agents,
        num_stages=num_stages,
        max_stage_length=learner.stage_lengths(num_stages).max(),
        block_size=block_size,
        fast_path=fast_path,
        devices=devices,
        platform=platform,
        memory_bytes=device_memory_bytes,
    )
    if check_memory:
        # Against the target's device memory (never this host's for another backend), as
        # ``simulate`` would on the target.
        plan.check_memory(spec, learner, limit=device_memory_bytes, platform=platform)
    padded = math.ceil(num_stages / spec.chunk_stages) * spec.chunk_stages
    params = plan.run_params(params_game, learner, num_stages, padded, eps)
    fast = spec.kernel == "fast"
    seed = jnp.uint32(0) if fast else jax.random.key(0)
    compiled = kernels.FAST if fast else kernels.REFERENCE
    return _programs(
        game, spec, params, kind, payload, seed, compiled[:2], kernels.jit_stage_metrics, sharding
    )


def sweep_programs(
    game: AnonymousGame,
    learner: StageLearning,
    num_agents: int,
    num_stages: int,
    *,
    batch: int = 2,
    learners: Sequence[StageLearning] | None = None,
    kernel: str = "auto",
    fast_path: str = "auto",
    devices: int | None = None,
    block_size: int | None = None,
    platform: str | None = None,
    device_memory_bytes: int | None = None,
    initial: Any = "uniform",
    sharding: jax.sharding.Sharding | None = None,
    check_memory: bool = True,
) -> list[Program]:
    """The programs ``sweep(game, learner, num_agents, num_stages, ...)`` of ``batch`` rows
    would run.

    Args:
        batch: rows of the sweep (``len(learners)`` when given).
        learners: the rows' learners (``sweep`` makes them from ``learner`` and its
            per-row ``explore_prob`` etc.: they set the event capacity and adopter filter);
            default ``batch`` copies of ``learner``.
        others: as in :func:`simulate_programs`.

    Returns:
        As :func:`simulate_programs`, the batched programs.
    """
    num_agents, num_stages, eps, _, _ = plan.validate_common(
        game, learner, num_agents, num_stages, 0.05, 0.05, None
    )
    rows = list(learners) if learners is not None else [learner] * batch
    if not rows:
        raise ValueError("a sweep needs at least one row")
    for row in rows:
        plan.check_sample_counts(row, num_stages)
    kind, payload = plan.parse_initial(initial, num_agents, game.num_actions)
    params_game = plan.check_game_params(game, None)
    kernel = plan.resolve_kernel(kernel, game, fast_path, rows[0], platform)
    max_length = max(row.stage_lengths(num_stages).max() for row in rows)
    spec = plan.kernel_spec(
        kernel,
        game,
        learner,
        num_agents=num_agents,
        num_stages=num_stages,
        max_stage_length=max_length,
        block_size=block_size,
        learners=rows,
        fast_path=fast_path,
        devices=devices,
        platform=platform,
        memory_bytes=device_memory_bytes,
    )
    if check_memory:
        plan.check_memory(
            spec, learner, batch=len(rows), limit=device_memory_bytes, platform=platform
        )
    padded = math.ceil(num_stages / spec.chunk_stages) * spec.chunk_stages
    row_params = [plan.run_params(params_game, row, num_stages, padded, eps) for row in rows]
    params = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *row_params)
    fast = spec.kernel == "fast"
    seeds = jnp.zeros(len(rows), jnp.uint32)
    keys = seeds if fast else jax.vmap(jax.random.key)(seeds)
    compiled = kernels.FAST if fast else kernels.REFERENCE
    return _programs(
        game,
        spec,
        params,
        kind,
        payload,
        keys,
        compiled[2:],
        kernels.jit_stage_metrics_batched,
        sharding,
    )


def _abstract(tree, sharding):
    """Every array leaf of ``tree`` as a ``ShapeDtypeStruct`` with ``sharding``; other
    leaves (the game, the spec's fields, the initial kind) unchanged."""

    def leaf(x):
        if isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, np.generic)):
            return jax.ShapeDtypeStruct(
                np.shape(x), x.dtype, sharding=sharding, weak_type=getattr(x, "weak_type", False)
            )
        return x

    return jax.tree.map(leaf, tree)


def _programs(game, spec, params, kind, payload, seed, jitted, metrics, sharding) -> list[Program]:
    """The driver's calls (``engine.Pipeline.init`` and ``advance``), in order."""
    jit_initial, jit_chunk = jitted
    fast = spec.kernel == "fast"
    agents = fast and spec.exploration_path == "agents"
    types = plan.types_array(spec)
    initial_args = _abstract(
        (game, spec, params, kind, jnp.asarray(payload), types, seed), sharding
    )
    actions, key, initial_metrics = jit_initial.trace(*initial_args).out_info
    programs = [Program("initial", jit_initial, initial_args, {}, spec, 1, False, 1)]
    if fast:
        # Pipeline.init: the host's counts, with a "stages" axis of one, for the metrics.
        counts = initial_metrics
        shape = counts.shape[:-2] + (1,) + counts.shape[-2:]
        initial_counts = jax.ShapeDtypeStruct(shape, counts.dtype, sharding=sharding)
        args = _abstract((game, params), sharding) + (initial_counts,)
        programs.append(Program("initial_metrics", metrics, args, {}, spec, 1, False, 1))
    # One program per distinct chunk spec (engine.chunk_spec), in order of first use.
    chunk_specs: dict[RunSpec, int] = {}
    for first in range(0, spec.num_stages, spec.chunk_stages):
        chunk_spec = engine.chunk_spec(spec, first, spec.num_stages)
        chunk_specs[chunk_spec] = chunk_specs.get(chunk_spec, 0) + 1
    first = jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding)
    for index, (chunk_spec, calls) in enumerate(chunk_specs.items()):
        name = "chunk" if index == 0 else "chunk_last"
        args = _abstract((game, chunk_spec, params, actions, types, key, first), sharding)
        records = jit_chunk.trace(*args).out_info[1]
        # On the agents path the driver also reads each chunk's overflow counts
        # (engine.Pipeline.advance), split off the records' metrics.
        counts = records.metrics[0] if agents else records.metrics
        programs.append(Program(name, jit_chunk, args, {}, chunk_spec, calls, True, 1 + agents))
        if fast:
            metrics_args = _abstract((game, params), sharding) + (_abstract(counts, sharding),)
            programs.append(
                Program(f"{name}_metrics", metrics, metrics_args, {}, chunk_spec, calls, True, 1)
            )
    return programs
