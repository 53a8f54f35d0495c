"""What configures the programs of a run, shared by the reference and fast kernels: the
static :class:`RunSpec` (shapes and code paths; jit-static) and the traced
:class:`RunParams`."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax

from jaxstage.games import Params

__all__ = ["RunSpec", "RunParams", "needs_own_estimates"]


def needs_own_estimates(info: str, info_sample_size: int | None) -> bool:
    """Whether agents keep per-agent payoff accumulators: exact published payoffs replace
    an agent's own averages, and the distribution mode uses the payoff model, so only
    plain learning and sampled payoffs need them."""
    return info == "none" or (info == "payoffs" and info_sample_size is not None)


class RunSpec(NamedTuple):
    """Static configuration: fixes array shapes and code paths (hashable, jit-static).

    ``kernel``, ``block_size``, ``max_stage_length`` and ``event_capacity`` matter to the
    fast kernel only (``max_stage_length`` sizes its per-round count buffer;
    ``event_capacity > 0`` selects sparse exploration events, :mod:`jaxstage.events`, over
    the loop over rounds; ``replay_events`` keeps pass 1's first batch of events for pass 2
    instead of drawing it again; ``adopter_capacity > 0`` makes pass 2 decide for the
    agents that adopt a candidate only, that many of a block at a time, and
    ``adopter_event_capacity`` is then how many of a block's first batch of events, those
    of its adopters, pass 1 keeps for pass 2 when it replays). ``num_shards`` is how many
    devices the fast kernel splits the blocks over (``num_blocks`` is then a multiple of
    it, each device holding ``local_blocks`` consecutive blocks).

    ``fast_path`` names the fast kernel's exploration path: ``"agents"`` (the GPU-first
    path, :mod:`jaxstage.agent_stage`), ``"events"`` or ``"rounds"`` (``""``, in specs
    built by hand: by ``event_capacity``). On the agents path ``agent_events`` is ``E``,
    the events computed per agent and stage (:func:`jaxstage.agent_events.max_events`),
    and ``tile_size`` the agents sharing one partial histogram in pass 1 (a divisor of
    ``block_size``).
    """

    num_agents: int
    num_actions: int
    type_counts: tuple[int, ...]
    info: str
    info_sample_size: int | None
    info_noisy: bool
    num_stages: int
    chunk_stages: int
    kernel: str = "reference"
    block_size: int = 0
    max_stage_length: int = 0
    event_capacity: int = 0
    replay_events: bool = False
    adopter_capacity: int = 0
    adopter_event_capacity: int = 0
    info_private: bool = False
    num_shards: int = 1
    fast_path: str = ""
    agent_events: int = 0
    tile_size: int = 0
    #: In a distributed run, whether the mesh is this process's devices only (the rows of
    #: a sweep split over the processes, ``jaxstage.distributed.process_local``) rather
    #: than every process's. Part of the jit cache key: the two programs differ.
    local_mesh: bool = False
    #: Counts summed over the shards as exact 64-bit :class:`jaxstage.wide.Wide` values
    #: and agent indices as two 32-bit words (``plan.wide_counts``): populations past
    #: ``2**31 - 1`` agents, on the loop over rounds.
    wide_counts: bool = False
    #: The learner class the reference kernel runs through its hooks
    #: (:mod:`jaxstage.learner_kernel`), or ``None``: stage learning on its own kernels.
    learner: type | None = None

    @property
    def num_types(self) -> int:
        return len(self.type_counts)

    @property
    def needs_own_estimates(self) -> bool:
        return needs_own_estimates(self.info, self.info_sample_size)

    @property
    def exploration_path(self) -> str:
        """The fast kernel's path: ``"agents"``, ``"events"`` or ``"rounds"``."""
        if self.fast_path:
            return self.fast_path
        return "events" if self.event_capacity else "rounds"

    @property
    def filter_adopters(self) -> bool:
        """Whether pass 2 decides for the adopting agents only."""
        return self.adopter_capacity > 0

    @property
    def num_blocks(self) -> int:
        blocks = math.ceil(self.num_agents / self.block_size)
        return math.ceil(blocks / self.num_shards) * self.num_shards

    @property
    def local_blocks(self) -> int:
        """Blocks of one shard."""
        return self.num_blocks // self.num_shards

    @property
    def padded_agents(self) -> int:
        return self.num_blocks * self.block_size


class RunParams(NamedTuple):
    """Traced parameters of one run (a sweep stacks them along a leading axis)."""

    game: Params  # dict of float32 arrays, the game's coefficients
    explore_prob: jax.Array  # (num_padded_stages,) float32
    stage_length: jax.Array  # (num_padded_stages,) int32
    update_prob: jax.Array  # () float32
    info_noise_std: jax.Array  # () float32
    eps: jax.Array  # () float32
    learner: Params | None = None  # the learner's traced hyperparameters (float32 scalars)
