"""Whole runs: :func:`simulate` (one run) and :func:`sweep` (a batch of runs), thin
layers over the driver of :mod:`jaxstage.engine`, with checkpoints (:mod:`jaxstage.checkpoint`)
for runs that must survive interruption.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from jaxstage import distributed, sweep_rows
from jaxstage._validation import check_int
from jaxstage.engine import Simulation, run_to_end
from jaxstage.games import AnonymousGame
from jaxstage.learner_interface import Learner
from jaxstage.records import SimulationResult, SweepResult
from jaxstage.resumable import resume, run_with_checkpoints
from jaxstage.sweeps import Sweep

__all__ = ["simulate", "sweep", "resume", "SimulationResult", "SweepResult"]


def simulate(
    game: AnonymousGame,
    learner: Learner,
    num_agents: int,
    num_stages: int,
    seed: int = 0,
    *,
    eps: float = 0.05,
    delta: float = 0.05,
    hold_stages: int | None = None,
    initial: Any = "uniform",
    game_params: dict[str, Any] | None = None,
    reference: Any = None,
    return_actions: bool = False,
    progress: bool = False,
    memory_limit_bytes: int | None = None,
    kernel: str = "auto",
    block_size: int | None = None,
    fast_path: str = "auto",
    devices: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
) -> SimulationResult:
    """Run stage learning on ``num_agents`` agents for ``num_stages`` stages.

    Args:
        game: an anonymous game (``jaxstage.make_game`` or ``games.from_payoff_fn``).
        learner: the learner: :class:`~jaxstage.StageLearning`, :class:`~jaxstage.EpsGreedy`,
            :class:`~jaxstage.Exp3` or any :class:`~jaxstage.Learner`.
        num_agents: population size, in ``[1, 2**31 - 1]``.
        num_stages: number of stages ``S >= 1``.
        seed: integer seed; the same seed gives the same numbers.
        eps: the eps of eps-best replies, ``>= 0``.
        delta: share of agents allowed off an eps-best reply, in ``[0, 1]``.
        hold_stages: ``None`` to require the (eps, delta)-equilibrium to hold until the
            end of the run, or the number of consecutive recorded states it must hold.
        initial: ``"uniform"`` (each agent i.i.d. uniform), an action index (everyone on
            it), a float probability vector of ``k`` entries (each agent i.i.d. from it) or
            an integer array of ``num_agents`` actions.
        game_params: overrides of the game's numeric parameters (``game.default_params()``).
        reference: reference equilibrium distribution(s) for the L1 distance; default:
            the game's own (none when ``game_params`` overrides them).
        return_actions: keep the final ``(n,)`` stage actions in the result.
        progress: show a progress bar.
        memory_limit_bytes: refuse runs estimated to need more (default: available memory).
        kernel: ``"fast"`` (blocked two-pass kernel with counter-based randomness, for
            games with the default Gaussian noise), ``"reference"`` (the readable kernel
            that is the specification) or ``"auto"`` (fast when the game allows it). The
            kernels draw different random numbers: the same seed gives the same numbers
            for the same kernel.
        block_size: agents per block of the fast kernel (default: chosen from the
            population and the number of actions); results do not depend on it.
        fast_path: how the fast kernel draws exploration: ``"events"`` (only the
            exploring agent-rounds, as geometric skips; cost independent of the stage
            length), ``"rounds"`` (a loop over rounds, every agent-round drawn),
            ``"agents"`` (designed for GPUs: a fixed number of geometric skips per agent,
            blocks sized from device memory, no data-dependent loops or conditionals;
            :mod:`jaxstage.agent_stage`; runs on any backend) or ``"auto"`` (``"agents"``
            on a GPU, else the CPU path estimated to be cheaper; see docs/kernels.md).
            The paths draw different random numbers.
        devices: how many devices of the default backend the fast kernel splits the
            population over (``shard_map``; each holds whole blocks of agents), in
            ``[1, jax.device_count()]``. Default: all of them, at most one per block. The
            numbers do not depend on it. On a CPU, JAX sees one device unless configured
            otherwise: :func:`jaxstage.use_cpu_cores` gives it one per core.
        checkpoint_dir: a new or empty folder to write checkpoints into
            (:mod:`jaxstage.checkpoint`); a run killed at any moment is continued from
            the last one by :func:`resume`, with bitwise the numbers of an uninterrupted
            run.
        checkpoint_every: stages between checkpoints, in ``[1, num_stages]`` (default:
            a tenth of the run, rounded up; only with ``checkpoint_dir``). A multiple
            of ``Simulation(...).spec.chunk_stages`` saves one compilation.

    Returns:
        A :class:`SimulationResult`.

    Example:
        >>> import jaxstage as js
        >>> game = js.make_game("congestion", num_actions=3)
        >>> learner = js.StageLearning(stage_length=20, explore_prob=0.1, update_prob=0.2)
        >>> result = js.simulate(game, learner, num_agents=10_000, num_stages=5, seed=0)
        >>> result.distribution.shape
        (6, 3)
    """
    sim = Simulation(
        game,
        learner,
        num_agents,
        num_stages,
        eps=eps,
        delta=delta,
        hold_stages=hold_stages,
        initial=initial,
        game_params=game_params,
        reference=reference,
        memory_limit_bytes=memory_limit_bytes,
        kernel=kernel,
        block_size=block_size,
        fast_path=fast_path,
        devices=devices,
    )
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    if checkpoint_dir is None:
        if checkpoint_every is not None:
            raise ValueError("checkpoint_every needs a checkpoint_dir to write them into")
        state, records = run_to_end(
            sim.pipeline, sim.init(seed), progress=progress, restart=lambda: (sim.init(seed), None)
        )
        return sim.result(records, final=state if return_actions else None)
    return run_with_checkpoints(
        sim,
        checkpoint_dir,
        seed=seed,
        every=checkpoint_every,
        progress=progress,
        return_actions=return_actions,
    )


def sweep(
    game: AnonymousGame,
    learner: Learner,
    num_agents: int,
    num_stages: int,
    seeds: int | Sequence[int] = 0,
    *,
    game_params: Sequence[dict[str, Any]] | None = None,
    explore_prob: Sequence[float] | None = None,
    update_prob: Sequence[float] | None = None,
    stage_length: Sequence[int] | None = None,
    info_noise_std: Sequence[float] | None = None,
    eps: float = 0.05,
    delta: float = 0.05,
    hold_stages: int | None = None,
    initial: Any = "uniform",
    reference: Any = None,
    progress: bool = False,
    memory_limit_bytes: int | None = None,
    kernel: str = "auto",
    block_size: int | None = None,
    fast_path: str = "auto",
    devices: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    distribute: str = "auto",
) -> SweepResult:
    """Run a batch of runs in one compiled call (``vmap``-ed in the reference kernel, rows
    one after another in the fast kernel).

    The batch size ``B`` is the longest of ``seeds`` and the per-row parameter lists; each
    list has ``B`` entries or one (broadcast). Row ``i`` equals
    ``simulate(..., seed=seeds[i])`` with the parameters of row ``i`` and the sweep's
    exploration path (``fast_path=result[i].config["fast_path"]``: the fast kernel takes
    one path for all rows, chosen from the platform and their mean stage length), except,
    when the rows' longest stage lengths differ, in the last bit of sums over a stage's
    rounds (the realised mean payoff; payoff estimates), whose buffer is sized for the
    longest row (docs/exactness.md); the
    learner gives the defaults for what is not swept (a constant ``explore_prob`` /
    ``stage_length`` row replaces the learner's schedule for that row).

    Args:
        game, learner, num_agents, num_stages, eps, delta, hold_stages, initial,
        reference, progress, memory_limit_bytes, kernel, block_size, fast_path, devices:
        as in :func:`simulate`.
        seeds: one seed per row (or one for all rows).
        game_params: per-row overrides of the game's numeric parameters.
        explore_prob, update_prob, stage_length, info_noise_std: per-row learner values.
        checkpoint_dir, checkpoint_every: as in :func:`simulate`: the whole sweep's state
            is checkpointed, and :func:`resume` continues it to its
            :class:`SweepResult`, bitwise that of an uninterrupted sweep.
        distribute: in a distributed run (``jaxstage.distributed.initialize``),
            ``"agents"`` splits every row's population over every device of every
            process, ``"rows"`` deals the rows to the processes (each runs its share on
            its own devices; ``devices`` is then per process), ``"auto"`` (default) takes
            ``"rows"`` when there are at least as many rows as processes and no
            checkpoints. Every process gets the whole result, bitwise the same either way.

    Returns:
        A :class:`SweepResult`; ``result[i]`` is a :class:`SimulationResult`.
    """
    checkpointed = checkpoint_dir is not None
    if not checkpointed and checkpoint_every is not None:
        raise ValueError("checkpoint_every needs a checkpoint_dir to write them into")
    sweep_rows.choose_mode(distribute, 1, checkpointed and distribute == "rows")  # check
    # In a distributed run the rows may go to the processes: the whole sweep is then
    # built to check every row and resolve its kernel and path, its memory checked by
    # each process for its own rows.
    maybe_rows = distributed.process_count() > 1 and distribute != "agents" and not checkpointed

    def build(whole_only: bool) -> Sweep:
        return Sweep(
            game,
            learner,
            num_agents,
            num_stages,
            seeds,
            game_params=game_params,
            explore_prob=explore_prob,
            update_prob=update_prob,
            stage_length=stage_length,
            info_noise_std=info_noise_std,
            eps=eps,
            delta=delta,
            hold_stages=hold_stages,
            initial=initial,
            reference=reference,
            memory_limit_bytes=sweep_rows.validating_limit() if whole_only else memory_limit_bytes,
            kernel=kernel,
            block_size=None if whole_only else block_size,
            fast_path=fast_path,
            devices=None if whole_only else devices,
        )

    batch = build(whole_only=maybe_rows)
    if maybe_rows:
        if sweep_rows.choose_mode(distribute, batch.num_rows, checkpointed) == "rows":
            return sweep_rows.sweep_rows_over_processes(
                batch,
                progress=progress,
                memory_limit_bytes=memory_limit_bytes,
                block_size=block_size,
                devices=devices,
            )
        batch = build(whole_only=False)  # fewer rows than processes: split the agents
    if checkpoint_dir is None:
        _, records = run_to_end(
            batch.pipeline, batch.init(), progress=progress, restart=lambda: (batch.init(), None)
        )
        return batch.result(records)
    return run_with_checkpoints(batch, checkpoint_dir, every=checkpoint_every, progress=progress)
