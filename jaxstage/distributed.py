"""Runs over several processes and hosts, on JAX's own distributed runtime.

After :func:`initialize` (``jax.distributed.initialize`` underneath), ``jax.devices()`` lists
the devices of every process, and the fast kernel splits one population over all of them
with the same ``shard_map`` that splits it over the devices of one process: every process
runs the same program (SPMD), counts are summed across processes by XLA's collectives
(gloo on CPU, NCCL on GPU), and every random number is keyed by the global agent index, so
the numbers are bitwise those of one process (tested: 1 x 1, 1 x 2 and 2 x 1 processes x
devices).

This module holds what the rest of jaxstage needs to stay correct there:

* :func:`mesh_devices`: the devices of an ``n``-shard mesh, dealt round-robin over the
  processes, so every process holds shards (a process without one would have nothing to
  run while the others wait on it);
* :func:`agreed_min`: a number every process agrees on (the smallest free memory), so that
  no static field of a compiled program depends on one host's state: two hosts compiling
  different programs would hang in their first collective;
* :func:`host_array` and :func:`global_array`: a population's actions gathered to the host,
  or placed from the host onto the mesh;
* :func:`is_main_process` and :func:`barrier`: only process 0 writes files, prints and
  shows progress; the others wait for it where they must.

Every function here is a no-op in a single process, so one process pays nothing for it.
See ``docs/distributed.md`` for how to launch runs (by hand, SLURM, Kubernetes).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import pickle
import re
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jaxstage._validation import check_int

__all__ = [
    "initialize",
    "is_initialized",
    "process_count",
    "process_index",
    "is_main_process",
    "mesh_devices",
    "local_share",
    "agreed_min",
    "allgather_objects",
    "host_array",
    "global_array",
    "spans_processes",
    "barrier",
]

#: Seconds a process waits for all the others to join (``jax.distributed``'s default is
#: 300, too long to notice a typo in an address).
DEFAULT_INITIALIZATION_TIMEOUT = 120
#: Seconds without a heartbeat after which the coordinator declares a process dead and
#: every other process stops with an error (``jax.distributed``'s default is 100).
DEFAULT_HEARTBEAT_TIMEOUT = 30

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def check_coordinator(address: str) -> str:
    """``HOST:PORT`` (``[v6]:PORT`` for an IPv6 address), port in ``[1, 65535]``."""
    match = _ADDRESS.match(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(
            f"coordinator must be HOST:PORT with a port in [1, 65535] (e.g. "
            f"'node001:12345'), got {address!r}"
        )
    return address


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: int | Sequence[int] | None = None,
    initialization_timeout: int = DEFAULT_INITIALIZATION_TIMEOUT,
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT,
    cpu_collectives: str = "gloo",
) -> None:
    """Join a run of several processes: ``jax.distributed.initialize`` with checked
    arguments, and CPU collectives switched on.

    Call it before any JAX computation, with the same ``coordinator`` and
    ``num_processes`` in every process and ``process_id`` ``0 .. num_processes - 1``.
    Left ``None``, all three come from the cluster's environment where JAX detects one
    (SLURM, Open MPI, TPU pods; see ``docs/distributed.md`` for Kubernetes). A process that
    does not join within ``initialization_timeout`` seconds makes every other one raise;
    one that dies later is noticed within ``heartbeat_timeout`` seconds (usually at once,
    when a collective's connection breaks) and the others stop with an error.

    ``cpu_collectives`` is the CPU backend's implementation of cross-process collectives
    (``"gloo"``; ``"mpi"`` needs an MPI library): without one, a CPU run of several
    processes cannot sum counts across them.
    """
    if coordinator is not None:
        check_coordinator(coordinator)
    if num_processes is not None:
        num_processes = check_int(num_processes, "num_processes", low=1, high=2**20)
    if process_id is not None:
        high = None if num_processes is None else num_processes - 1
        process_id = check_int(process_id, "process_id", low=0, high=high)
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError(
            "give coordinator, num_processes and process_id together, or none of them "
            "(to detect them from SLURM, Open MPI or a TPU pod)"
        )
    initialization_timeout = check_int(
        initialization_timeout, "initialization_timeout", low=1, high=86_400
    )
    heartbeat_timeout = check_int(heartbeat_timeout, "heartbeat_timeout", low=1, high=86_400)
    if cpu_collectives not in ("gloo", "mpi"):
        raise ValueError(f"cpu_collectives must be 'gloo' or 'mpi', got {cpu_collectives!r}")
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout,
    )


def is_initialized() -> bool:
    """Whether this process has joined a distributed run (``jax.distributed``)."""
    return jax.distributed.is_initialized()


def process_count() -> int:
    return jax.process_count()


def process_index() -> int:
    return jax.process_index()


_PROCESS_LOCAL: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jaxstage_process_local", default=False
)


@contextlib.contextmanager
def process_local() -> Iterator[None]:
    """Plan and run on this process's devices only, with no collective: what each process
    does with its own rows of a sweep (``jaxstage.sweep``, rows over processes). Programs
    planned inside it have ``spec.local_mesh`` set."""
    token = _PROCESS_LOCAL.set(True)
    try:
        yield
    finally:
        _PROCESS_LOCAL.reset(token)


def is_process_local() -> bool:
    """Inside :func:`process_local` in a run of several processes."""
    return _PROCESS_LOCAL.get() and jax.process_count() > 1


def mesh_process_count() -> int:
    """The processes a population's mesh spans: every process, or 1 inside
    :func:`process_local`."""
    return 1 if _PROCESS_LOCAL.get() else jax.process_count()


def device_count() -> int:
    """The devices a population can be split over: every process's, or this process's
    inside :func:`process_local`."""
    return jax.local_device_count() if _PROCESS_LOCAL.get() else jax.device_count()


def is_main_process() -> bool:
    """Process 0: the one that writes files, prints and shows progress."""
    return jax.process_index() == 0


def mesh_devices(num_shards: int, *, local: bool = False) -> list:
    """The ``num_shards`` devices of the agent mesh: every process's first local device,
    then every process's second, and so on (``jax.devices()`` itself in one process).

    In a run of ``P`` processes ``num_shards`` must be 1 (each process runs the whole
    population on its own device, as one process would) or at least ``P``, so that each
    process holds a shard: ``plan.shard_count`` checks it before tracing. ``local``: this
    process's first ``num_shards`` devices (:func:`process_local`)."""
    devices = jax.devices()
    if jax.process_count() == 1 or local:
        return jax.local_devices()[:num_shards]
    if num_shards == 1:
        return [jax.local_devices()[0]]
    by_process: dict[int, list] = {}
    for device in devices:
        by_process.setdefault(device.process_index, []).append(device)
    dealt = []
    for position in range(max(len(d) for d in by_process.values())):
        for process in sorted(by_process):
            if position < len(by_process[process]):
                dealt.append(by_process[process][position])
    return dealt[:num_shards]


def local_share(num_shards: int) -> float:
    """The largest share of the ``num_shards`` shards that one process holds (1 in a single
    process, or when each process runs the whole population)."""
    if mesh_process_count() == 1 or num_shards == 1:
        return 1.0
    held: dict[int, int] = {}
    for device in mesh_devices(num_shards):
        held[device.process_index] = held.get(device.process_index, 0) + 1
    return max(held.values()) / num_shards


def agreed_min(value: int) -> int:
    """The smallest of every process's non-negative ``value`` (below ``2**63``): the same
    number in every process. Itself in a single process. Every process must call it at the
    same point of the program (it is a collective)."""
    value = int(value)
    if mesh_process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    # Two 32-bit words: JAX runs without 64-bit integers by default.
    words = np.asarray([value >> 32, value & 0xFFFFFFFF], np.uint32)
    gathered = np.asarray(multihost_utils.process_allgather(words))
    values = (gathered[:, 0].astype(np.int64) << 32) | gathered[:, 1].astype(np.int64)
    return int(values.min())


def allgather_objects(value: Any) -> list[Any]:
    """Every process's ``value`` (picklable), in process order: a collective."""
    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(value), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32)))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [
        pickle.loads(gathered[i, : int(size)].tobytes())  # noqa: S301 - our own processes
        for i, size in enumerate(sizes.reshape(-1))
    ]


def host_array(array) -> np.ndarray:
    """``array`` as a NumPy array on this host: gathered from every process when some of
    its shards live on other processes (a collective then: every process must call it)."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.asarray(array)
    if array.is_fully_replicated:
        return np.asarray(array.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def spans_processes(sharding: jax.sharding.Sharding | None) -> bool:
    """Whether ``sharding`` puts data on devices of other processes."""
    if sharding is None or jax.process_count() == 1:
        return False
    return any(device.process_index != jax.process_index() for device in sharding.device_set)


def global_array(host: np.ndarray, sharding: jax.sharding.Sharding | None) -> jax.Array:
    """Host values (the same in every process) as a device array with ``sharding`` (a
    state's actions over the agent mesh): each process places only its own shards. In a
    single process, or without a sharding, simply ``jnp.asarray(host)``."""
    import jax.numpy as jnp

    if sharding is None or jax.process_count() == 1:
        return jnp.asarray(host)
    host = np.ascontiguousarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op in one process)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def environment_summary() -> dict[str, int | str]:
    """What a run records about its processes (``process_count``, devices)."""
    return {
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "hostname": os.uname().nodename if hasattr(os, "uname") else "",
    }
