"""A reader of optimised HLO text: its computations, their instructions, and the bytes of
an HLO shape.

Enough of the text format of ``compiled.as_text()`` for :mod:`jaxstage.hlo_report` to
count what a program launches: each computation's instructions with their shapes,
opcodes, operands and attributes (the computations they call, a ``while`` loop's known
trip count, the JAX operation they came from). Not a validating parser: lines it does
not recognise are skipped.
"""

from __future__ import annotations

import dataclasses
import math
import re

__all__ = ["Instruction", "Computation", "parse_hlo", "shape_bytes", "element_count"]

_DTYPE_BITS = {
    "pred": 8,
    "s2": 2,
    "u2": 2,
    "s4": 4,
    "u4": 4,
    "s8": 8,
    "u8": 8,
    "s16": 16,
    "u16": 16,
    "s32": 32,
    "u32": 32,
    "s64": 64,
    "u64": 64,
    "f16": 16,
    "bf16": 16,
    "f32": 32,
    "f64": 64,
    "c64": 64,
    "c128": 128,
    "token": 0,
}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128|f8\w*|token)\[([\d,]*)\]")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CALLED = re.compile(
    r"\b(calls|body|condition|to_apply|true_computation|false_computation)=%?([\w.\-]+)"
)
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def shape_bytes(shape: str) -> int:
    """Bytes of every array in an HLO shape (a tuple's arrays added up)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        bits = _DTYPE_BITS.get(dtype, 8)  # f8 variants
        elements = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
        total += elements * bits // 8
    return total


def element_count(shape: str) -> int:
    """Elements of every array in an HLO shape (a tuple's arrays added up)."""
    return sum(
        math.prod(int(d) for d in dims.split(",") if d) if dims else 1
        for _, dims in _ARRAY.findall(shape)
    )


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One HLO instruction: ``%name = shape opcode(operands), attributes``."""

    name: str
    shape: str
    opcode: str
    operands: tuple[str, ...]
    attributes: str
    is_root: bool

    @property
    def called(self) -> tuple[str, ...]:
        """Names of the computations it calls (bodies, branches, fused computations)."""
        names = [name for _, name in _CALLED.findall(self.attributes)]
        for group in _BRANCHES.findall(self.attributes):
            names += [part.strip().lstrip("%") for part in group.split(",") if part.strip()]
        return tuple(names)

    @property
    def calls_by_role(self) -> dict[str, str]:
        """The computations it calls by role (``body``, ``condition``, ``calls``...)."""
        return dict(_CALLED.findall(self.attributes))

    @property
    def trip_count(self) -> int | None:
        match = _TRIP_COUNT.search(self.attributes)
        return None if match is None else int(match.group(1))

    @property
    def op_name(self) -> str:
        match = _OP_NAME.search(self.attributes)
        return "" if match is None else match.group(1)


@dataclasses.dataclass(frozen=True)
class Computation:
    """One HLO computation (the entry, a loop body or condition, a fused computation)."""

    name: str
    instructions: tuple[Instruction, ...]
    is_entry: bool

    @property
    def root(self) -> Instruction:
        return next((i for i in self.instructions if i.is_root), self.instructions[-1])

    def by_name(self) -> dict[str, Instruction]:
        return {i.name: i for i in self.instructions}


def _balanced(text: str, start: int) -> int:
    """Index just past the bracket group opening at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "({[":
            depth += 1
        elif text[i] in ")}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")


def _parse_instruction(line: str) -> Instruction | None:
    match = _INSTRUCTION.match(line)
    if match is None:
        return None
    is_root, name, rest = bool(match.group(1)), match.group(2), match.group(3)
    if rest.startswith("("):  # a tuple shape
        end = _balanced(rest, 0)
    else:
        end = rest.find(" ")
        end = len(rest) if end < 0 else end
    shape, rest = rest[:end], rest[end:].lstrip()
    opcode = re.match(r"[\w\-]+", rest)
    if opcode is None:
        return None
    open_at = opcode.end()
    close_at = _balanced(rest, open_at) if rest[open_at : open_at + 1] == "(" else open_at
    operands = tuple(re.findall(r"%([\w.\-]+)", rest[open_at:close_at]))
    return Instruction(name, shape, opcode.group(0), operands, rest[close_at:], is_root)


def parse_hlo(text: str) -> tuple[dict[str, Computation], str]:
    """The computations of an HLO module's text, by name, and the entry's name."""
    computations: dict[str, Computation] = {}
    entry = ""
    current: tuple[str, bool] | None = None
    body: list[Instruction] = []
    for line in text.splitlines():
        if current is None:
            header = _HEADER.match(line)
            if header and not line.startswith(" "):
                current, body = (header.group(2), bool(header.group(1))), []
            continue
        if line.startswith("}"):
            name, is_entry = current
            computations[name] = Computation(name, tuple(body), is_entry)
            entry = name if is_entry else entry
            current = None
            continue
        instruction = _parse_instruction(line)
        if instruction is not None:
            body.append(instruction)
    if not entry:
        raise ValueError("no ENTRY computation in the HLO text")
    return computations, entry
