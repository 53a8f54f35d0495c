"""Instructions of interest in a program's PTX: atomics by type, TF32 and ``mma``.

The kernels' PTX (written by XLA's GPU compiler when asked to dump it) shows what the
HLO does not: whether a scatter-add became float atomics, whose order (and so rounding)
changes from run to run, compare-and-swap loops for operations without a native atomic,
and float32 products run as TF32. ``scripts/gpu_compile.py --check`` fails on them.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable

__all__ = ["PtxCounts", "ptx_counts"]


@dataclasses.dataclass
class PtxCounts:
    """Instructions of interest in a program's PTX (all its kernel files together)."""

    atomics: Counter = dataclasses.field(default_factory=Counter)  # mnemonic -> count
    tf32_instructions: int = 0
    mma_instructions: int = 0
    files: int = 0

    @property
    def float_atomics(self) -> dict[str, int]:
        """Atomic adds, mins and maxes on floating-point values (their order, and so their
        rounding, changes from run to run)."""
        return {name: n for name, n in self.atomics.items() if _is_float_atomic(name)}

    @property
    def cas_atomics(self) -> int:
        """Compare-and-swap atomics (XLA's loops for operations without a native atomic)."""
        return sum(n for name, n in self.atomics.items() if ".cas." in name + ".")

    def as_dict(self) -> dict:
        return {
            "atomics": dict(sorted(self.atomics.items())),
            "float_atomics": self.float_atomics,
            "cas_atomics": self.cas_atomics,
            "tf32_instructions": self.tf32_instructions,
            "mma_instructions": self.mma_instructions,
            "ptx_files": self.files,
        }


_ATOMIC = re.compile(r"^\s*(?:@!?%\w+\s+)?((?:atom|red)(?:\.[\w:]+)+)")
_FLOAT_TYPE = re.compile(r"\.(?:f16|f16x2|bf16|bf16x2|f32|f64|e4m3\w*|e5m2\w*)\b")


def _is_float_atomic(mnemonic: str) -> bool:
    return bool(_FLOAT_TYPE.search(mnemonic)) and ".cas" not in mnemonic


def ptx_counts(texts: Iterable[str]) -> PtxCounts:
    """Atomics by mnemonic and TF32 / ``mma`` instructions in PTX ``texts``."""
    counts = PtxCounts()
    for text in texts:
        counts.files += 1
        for line in text.splitlines():
            code = line.split("//", 1)[0]
            if not code.strip():
                continue
            atomic = _ATOMIC.match(code)
            if atomic:
                counts.atomics[atomic.group(1)] += 1
            if "tf32" in code:
                counts.tf32_instructions += 1
            if re.search(r"\b(?:w?g?mma)\.", code):
                counts.mma_instructions += 1
    return counts
