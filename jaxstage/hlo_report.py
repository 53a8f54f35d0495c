"""What a compiled program would launch, read from its optimised HLO text and its PTX.

For a program compiled for a GPU (on a machine without one: ``scripts/gpu_compile.py``),
:func:`hlo_counts` reads ``compiled.as_text()`` and counts, per call of the program:

* **kernels**: every instruction that becomes a kernel launch (a fusion, a custom call
  such as a cuBLAS product, a copy, a collective, any other unfused operation) in the
  entry computation and, recursively, in the computations it calls; a ``while`` loop
  multiplies its body (and condition) by its ``known_trip_count`` (``backend_config``);
* **loops** with and without a known trip count. A loop without one runs its condition
  on the device and copies the predicate to the host every iteration (a host sync); its
  iterations cannot be read from the program, so they are counted as
  ``unknown_trip_count`` iterations (default 1: say what you assume) and listed apart;
* **conditionals** (each one a host sync: the branch index goes to the host; the branch
  with the most kernels is counted) and **host callbacks** (custom calls into Python);
* **bytes and operations** of each kernel, a model of its own (XLA's cost analysis gives
  nothing for a compile-only device): a fusion reads its parameters (only the slices
  its ``dynamic-slice``, ``slice`` and ``gather`` read, nothing of a buffer it updates in
  place) and writes its outputs (only the update of an in-place ``dynamic-update-slice``
  or ``scatter``); every non-trivial instruction inside counts one operation per element.

:func:`ptx_counts` reads the kernels' PTX: atomic instructions by type
(``atom.global.add.u32``, ``red.global.add.f32``, compare-and-swap loops ``atom.cas``)
and TF32 instructions (``mma`` and ``cvt`` with ``tf32``). :func:`estimate` turns the
counts into a time per stage with :class:`CostModel`: an **estimate**, never a
measurement.

The parts: :mod:`jaxstage.hlo_parse` reads the HLO text, :mod:`jaxstage.ptx_report`
the PTX and :mod:`jaxstage.cost_model` holds the estimate; this module counts and
re-exports their public names (``scripts/gpu_compile.py`` imports them from here).

Example:
    >>> hlo = '''HloModule m
    ...
    ... %fused (p: f32[8]) -> f32[8] {
    ...   %p = f32[8]{0} parameter(0)
    ...   ROOT %n = f32[8]{0} negate(%p)
    ... }
    ...
    ... ENTRY %main (a: f32[8]) -> f32[8] {
    ...   %a = f32[8]{0} parameter(0)
    ...   %f = f32[8]{0} fusion(%a), kind=kLoop, calls=%fused
    ...   ROOT %c = f32[8]{0} copy(%f)
    ... }
    ... '''
    >>> counts = hlo_counts(hlo)
    >>> counts.kernels, dict(counts.kernels_by_kind), counts.bytes_accessed
    (2.0, {'fusion': 1.0, 'copy': 1.0}, 128.0)
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping

from jaxstage.cost_model import H200, CostModel, estimate
from jaxstage.hlo_parse import Computation, Instruction, element_count, parse_hlo, shape_bytes
from jaxstage.ptx_report import PtxCounts, ptx_counts

__all__ = [
    "Instruction",
    "Computation",
    "Loop",
    "HloCounts",
    "PtxCounts",
    "CostModel",
    "H200",
    "parse_hlo",
    "hlo_counts",
    "ptx_counts",
    "estimate",
    "shape_bytes",
    "program_summary",
]

#: Instructions that launch nothing: buffer plumbing, resolved at compile time.
_FREE = frozenset(
    {
        "parameter",
        "constant",
        "get-tuple-element",
        "tuple",
        "bitcast",
        "after-all",
        "add-dependency",
        "opt-barrier",
        "domain",
        "copy-done",
        "all-reduce-done",
        "all-gather-done",
        "collective-permute-done",
        "async-done",
        "send-done",
        "recv-done",
    }
)
_COLLECTIVES = frozenset(
    {
        "all-reduce",
        "all-reduce-start",
        "all-gather",
        "all-gather-start",
        "reduce-scatter",
        "all-to-all",
        "collective-permute",
        "collective-permute-start",
        "collective-broadcast",
    }
)
#: Operations inside a fusion that move or reinterpret data without computing on it.
_NO_OPS = frozenset(
    {
        "parameter",
        "constant",
        "bitcast",
        "reshape",
        "broadcast",
        "slice",
        "dynamic-slice",
        "get-tuple-element",
        "tuple",
        "copy",
        "transpose",
        "iota",
        "concatenate",
        "pad",
        "dynamic-update-slice",
        "gather",
        "bitcast-convert",
    }
)
_READS_A_SLICE = frozenset({"dynamic-slice", "slice", "gather"})
_IN_PLACE = frozenset({"dynamic-update-slice", "scatter"})
_CALLBACK = re.compile(r'custom_call_target="([^"]*callback[^"]*)"')


@dataclasses.dataclass
class Loop:
    """A ``while`` loop: its trip count (``None``: unknown) and its cost per iteration."""

    name: str
    op_name: str
    trip_count: int | None
    kernels_per_iteration: float
    calls: float  # how many times the loop itself runs per call of the program


@dataclasses.dataclass
class HloCounts:
    """Per call of a program (loops multiplied out; see the module docstring)."""

    kernels: float = 0.0
    kernels_by_kind: Counter = dataclasses.field(default_factory=Counter)
    loops_known: int = 0  # while ops with a known trip count (static count)
    loops_unknown: int = 0  # while ops without one
    conditionals: int = 0  # conditional ops (static count)
    conditionals_run: float = 0.0  # conditionals executed per call
    host_callbacks: int = 0
    host_callback_targets: tuple[str, ...] = ()
    host_syncs: float = 0.0  # predicates of unknown loops and branch indices to the host
    bytes_accessed: float = 0.0
    operations: float = 0.0
    loops: list[Loop] = dataclasses.field(default_factory=list)
    unknown_trip_count: float = 1.0

    def add(self, other: HloCounts, times: float) -> None:
        """Add ``other`` run ``times`` times: its dynamic counts ``times`` times, its
        static ones (loops, conditionals, callbacks in the code) once."""
        self.kernels += times * other.kernels
        for kind, count in other.kernels_by_kind.items():
            self.kernels_by_kind[kind] += times * count
        self.conditionals_run += times * other.conditionals_run
        self.host_syncs += times * other.host_syncs
        self.bytes_accessed += times * other.bytes_accessed
        self.operations += times * other.operations
        self.loops_known += other.loops_known
        self.loops_unknown += other.loops_unknown
        self.conditionals += other.conditionals
        self.host_callbacks += other.host_callbacks
        self.host_callback_targets += other.host_callback_targets
        for loop in other.loops:
            self.loops.append(dataclasses.replace(loop, calls=loop.calls * times))

    def as_dict(self) -> dict:
        return {
            "kernels": self.kernels,
            "kernels_by_kind": dict(self.kernels_by_kind),
            "loops_known_trip_count": self.loops_known,
            "loops_unknown_trip_count": self.loops_unknown,
            "unknown_trip_count_assumed": self.unknown_trip_count,
            "conditionals": self.conditionals,
            "conditionals_run": self.conditionals_run,
            "host_callbacks": self.host_callbacks,
            "host_callback_targets": sorted(set(self.host_callback_targets)),
            "host_syncs": self.host_syncs,
            "bytes_accessed": self.bytes_accessed,
            "operations": self.operations,
            "loops": [dataclasses.asdict(loop) for loop in self.loops],
        }


def _fusion_cost(fused: Computation) -> tuple[float, float]:
    """``(bytes, operations)`` of one launch of a fusion (module docstring)."""
    users: dict[str, list[Instruction]] = {}
    for instruction in fused.instructions:
        for operand in instruction.operands:
            users.setdefault(operand, []).append(instruction)
    roots = [fused.root]
    if fused.root.opcode == "tuple":
        table = fused.by_name()
        roots = [table[name] for name in fused.root.operands if name in table]
    in_place = {r.operands[0] for r in roots if r.opcode in _IN_PLACE and r.operands}
    read = 0
    for instruction in fused.instructions:
        if instruction.opcode != "parameter":
            continue
        mine = users.get(instruction.name, [])
        if instruction.name in in_place:
            # Updated in place: its other readers see the slices they read, no more.
            mine = [u for u in mine if u.opcode not in _IN_PLACE]
        if mine and all(
            u.opcode in _READS_A_SLICE and u.operands[0] == instruction.name for u in mine
        ):
            read += sum(shape_bytes(u.shape) for u in mine)
        elif mine or instruction.name not in in_place:
            read += shape_bytes(instruction.shape)
    written = 0
    table = fused.by_name()
    for root in roots:
        if root.opcode == "dynamic-update-slice" and len(root.operands) > 1:
            written += shape_bytes(table[root.operands[1]].shape)
        elif root.opcode == "scatter" and len(root.operands) > 2:
            written += shape_bytes(table[root.operands[-1]].shape)
        else:
            written += shape_bytes(root.shape)
    operations = 0
    for instruction in fused.instructions:
        if instruction.opcode in _NO_OPS:
            continue
        size = element_count(instruction.shape)
        if instruction.opcode == "reduce" and instruction.operands:
            size = max(size, element_count(table[instruction.operands[0]].shape))
        operations += size
    return float(read + written), float(operations)


def hlo_counts(text: str, unknown_trip_count: float = 1.0) -> HloCounts:
    """What one call of the program of optimised HLO ``text`` launches (module docstring).

    Args:
        text: ``compiled.as_text()`` of a program compiled for a GPU.
        unknown_trip_count: iterations assumed for each loop without a known trip count.

    Returns:
        An :class:`HloCounts`.
    """
    computations, entry = parse_hlo(text)
    cache: dict[str, HloCounts] = {}

    def of(name: str) -> HloCounts:
        if name in cache:
            return cache[name]
        counts = HloCounts(unknown_trip_count=unknown_trip_count)
        computation = computations[name]
        table = computation.by_name()
        for instruction in computation.instructions:
            _count_instruction(instruction, table, counts)
        cache[name] = counts
        return counts

    def _count_instruction(instruction: Instruction, table, counts: HloCounts) -> None:
        opcode = instruction.opcode
        if opcode in _FREE:
            return
        if opcode == "while":
            called = instruction.calls_by_role
            body, condition = of(called["body"]), of(called["condition"])
            trips = instruction.trip_count
            first_inner = len(counts.loops)
            if trips is None:
                # The condition runs on the device before every iteration and once more
                # at the end, each time copying its predicate to the host.
                runs = unknown_trip_count
                counts.add(body, runs)
                counts.add(condition, runs + 1)
                counts.host_syncs += runs + 1
                counts.loops_unknown += 1
                per_iteration = body.kernels + condition.kernels
            else:
                # With a known trip count XLA runs the body that many times and never
                # the condition.
                runs = float(trips)
                counts.add(body, runs)
                counts.loops_known += 1
                per_iteration = body.kernels
            loop = Loop(instruction.name, instruction.op_name, trips, per_iteration, 1.0)
            counts.loops.insert(first_inner, loop)
            return
        if opcode == "conditional":
            branches = [of(name) for name in instruction.called]
            heaviest = max(range(len(branches)), key=lambda b: branches[b].kernels)
            for b, branch in enumerate(branches):  # static counts of every branch
                counts.add(branch, 1.0 if b == heaviest else 0.0)
            counts.conditionals += 1
            counts.conditionals_run += 1
            counts.host_syncs += 1
            return
        if opcode in ("call", "async-start"):
            for name in instruction.called:
                counts.add(of(name), 1.0)
            return
        kind = opcode
        if opcode == "fusion":
            fused = computations.get(instruction.called[0]) if instruction.called else None
            moved, operations = (
                _fusion_cost(fused) if fused is not None else (shape_bytes(instruction.shape), 0)
            )
        elif opcode == "custom-call":
            callback = _CALLBACK.search(instruction.attributes)
            if callback:
                counts.host_callbacks += 1
                counts.host_callback_targets += (callback.group(1),)
                counts.host_syncs += 1
            operands = sum(shape_bytes(table[o].shape) for o in instruction.operands if o in table)
            moved, operations = float(operands + shape_bytes(instruction.shape)), 0.0
        else:
            if opcode in _COLLECTIVES:
                kind = "collective"
            elif opcode not in ("copy", "copy-start"):
                kind = "other"
            moved = 2.0 * shape_bytes(instruction.shape)
            operations = (
                0.0 if opcode.startswith("copy") else float(element_count(instruction.shape))
            )
        counts.kernels += 1
        counts.kernels_by_kind[kind] += 1
        counts.bytes_accessed += moved
        counts.operations += operations

    result = HloCounts(unknown_trip_count=unknown_trip_count)
    result.add(of(entry), 1.0)
    return result


def program_summary(counts: HloCounts, ptx: PtxCounts | None, calls_per_stage: float) -> Mapping:
    """``counts`` and ``ptx`` as one record, with the dynamic counts per stage."""
    record = counts.as_dict()
    record["calls_per_stage"] = calls_per_stage
    record["kernels_per_stage"] = counts.kernels * calls_per_stage
    record["host_syncs_per_stage"] = counts.host_syncs * calls_per_stage
    record["bytes_per_stage"] = counts.bytes_accessed * calls_per_stage
    record["operations_per_stage"] = counts.operations * calls_per_stage
    if ptx is not None:
        record["ptx"] = ptx.as_dict()
    return record
