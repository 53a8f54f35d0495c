"""A cost model of a GPU stage: its time estimated from the counts of
:mod:`jaxstage.hlo_report` (an estimate, never a measurement).

``kernels * launch_s + host_syncs * host_sync_s + max(bytes / bandwidth, operations /
peak)``: launches and host syncs dominate a small stage, memory traffic a large one.
:data:`H200` holds the constants of the GPU the compile check targets.
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["CostModel", "H200", "estimate"]


@dataclasses.dataclass(frozen=True)
class CostModel:
    """Constants of :func:`estimate` (an estimate, not a measurement).

    ``launch_s`` per kernel (a launch and the gap to the next; inside a CUDA graph, which
    XLA uses for runs of kernels, it is lower), ``host_sync_s`` per wait of the host for a
    device value (a loop predicate, a branch index, the driver's results per chunk), and
    the memory bandwidth and arithmetic peak of the device.
    """

    name: str
    launch_s: float
    host_sync_s: float
    bytes_per_s: float
    operations_per_s: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


#: NVIDIA H200: 4.8 TB/s HBM3e; 67 TFLOP/s FP32 without tensor cores (integer and float
#: operations both counted at that rate); 2 us a launch, 15 us a host sync.
H200 = CostModel(
    name="H200",
    launch_s=2e-6,
    host_sync_s=15e-6,
    bytes_per_s=4.8e12,
    operations_per_s=67e12,
)


def estimate(
    kernels: float,
    host_syncs: float,
    bytes_accessed: float,
    operations: float,
    agent_rounds: float,
    model: CostModel = H200,
) -> dict[str, float]:
    """Estimated seconds per stage and agent-rounds per second:
    ``kernels * launch_s + host_syncs * host_sync_s + max(bytes / bandwidth,
    operations / peak)``, for a stage of ``agent_rounds`` (agents times stage length).

    Example:
        >>> e = estimate(100, 2, 4.8e9, 0, 1e9)
        >>> round(e["seconds_per_stage"], 6)
        0.00123
    """
    memory = bytes_accessed / model.bytes_per_s
    compute = operations / model.operations_per_s
    seconds = kernels * model.launch_s + host_syncs * model.host_sync_s + max(memory, compute)
    return {
        "seconds_per_stage": seconds,
        "launch_seconds": kernels * model.launch_s,
        "host_sync_seconds": host_syncs * model.host_sync_s,
        "memory_seconds": memory,
        "compute_seconds": compute,
        "agent_rounds_per_second": agent_rounds / seconds if seconds > 0 else math.inf,
    }
