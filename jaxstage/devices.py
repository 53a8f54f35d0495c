"""Devices for the fast kernel: one JAX CPU device per core.

On a CPU, JAX exposes one device, and XLA runs most of the fast kernel's operations
(scatters, gathers, its loops) on one thread of it. The fast kernel splits the population
over devices (``simulate(..., devices=...)``, with ``shard_map``), so splitting the CPU
into one device per core runs the shards in parallel: on a 2-core machine, two devices ran
1.4 to 1.9 times the agent-rounds per second of one from 10^6 to 10^9 agents, and sweeps
of 10^6 agents 2.3 times; a population of a few blocks gains little, one block nothing
(docs/performance.md). The numbers do not depend on the number of devices.
"""

from __future__ import annotations

import os

import jax

__all__ = ["use_cpu_cores", "cpu_core_count"]


def cpu_core_count() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def use_cpu_cores(count: int | None = None) -> int:
    """Give JAX ``count`` CPU devices (default: one per core); returns how many it has.

    Call it once, before any JAX computation (JAX fixes its devices when it first
    computes). Called again, or after JAX has started, it checks that JAX already has
    that many CPU devices and raises ``RuntimeError`` naming both numbers if not. It
    changes ``jax.devices()`` for the whole process, which is why ``import jaxstage``
    does not do it by itself; the ``jaxstage`` command and the benchmarks call it.
    """
    wanted = cpu_core_count() if count is None else count
    if isinstance(wanted, bool) or not isinstance(wanted, int) or not 1 <= wanted <= 4096:
        raise ValueError(f"count must be an integer in [1, 4096], got {count!r}")
    try:
        jax.config.update("jax_num_cpu_devices", wanted)
    except RuntimeError:  # JAX has started: fine if it has what we want
        have = len(jax.devices("cpu"))
        if have != wanted:
            raise RuntimeError(
                f"use_cpu_cores({wanted}) must run before any JAX computation: JAX has "
                f"started with {have} CPU device(s). Call it right after importing "
                f"jaxstage, or start Python with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={wanted}"
            ) from None
    return wanted
