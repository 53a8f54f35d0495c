"""How the commands print: vectors, the game's reference equilibrium, and a standard
output that outlives its reader."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np

from jaxstage.game_base import AnonymousGame


def format_vector(values: Any) -> str:
    """``values`` as a float array printed to 4 decimals, comma-separated."""
    return np.array2string(np.asarray(values, dtype=np.float64), precision=4, separator=", ")


def print_equilibria(game: AnonymousGame, final: np.ndarray | None = None) -> None:
    """Print ``game``'s analytic equilibrium, the nearest to ``final`` when several."""
    equilibria = game.equilibria()
    if not equilibria:
        print("reference equilibrium: none known analytically")
        return
    if final is None or len(equilibria) == 1:
        nearest = equilibria[0]
    else:
        nearest = min(equilibria, key=lambda e: float(np.abs(np.asarray(e) - final).sum()))
    which = "" if len(equilibria) == 1 else f" (nearest of {len(equilibria)})"
    print(f"reference equilibrium{which} {format_vector(nearest)}")


class _OutlivedStdout:
    """Standard output that drops what it is given once its reader has gone: ``jaxstage
    run ... | head -1`` closes the pipe after one line, and the command must still write
    its results folder rather than stop at its next ``print``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._gone = False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        self._gone = True
        # What is still buffered, and the interpreter's flush at exit, go to /dev/null.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def stdout_outliving_its_reader() -> Iterator[None]:
    """Within it, printing to a closed pipe is silently dropped (see :class:`_OutlivedStdout`)."""
    original = sys.stdout
    sys.stdout = _OutlivedStdout(original)
    try:
        yield
    finally:
        sys.stdout = original
