"""Table cells, CSV and markdown, shared by results folders and study folders.

Both kinds of folder write tidy tables of plain Python values. Keeping one cell
convention (:func:`plain_number`, :func:`csv_cell`) and one writer here is what makes a
``results.csv`` and a ``runs.csv`` read back the same way, and a table written twice
byte-identical.

Example:
    >>> plain_number(np.float32(0.05)), plain_number(np.int64(3)), plain_number(None)
    (0.05, 3, None)
    >>> print(csv_text([{"a": 1, "b": None}, {"a": 0.5, "b": math.inf}]), end="")
    a,b
    1,
    0.5,inf
    >>> print(markdown_table([{"n": 10_000, "share": 0.25}], ("n", "share")), end="")
    | n | share |
    |---|---|
    | 10,000 | 0.25 |
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "plain_number",
    "is_missing",
    "csv_cell",
    "table_columns",
    "csv_text",
    "write_csv",
    "read_csv",
    "format_cell",
    "markdown_table",
]


def plain_number(value: Any) -> Any:
    """A plain Python scalar; values that are exact float32 get their short float32 repr.

    Most metrics come off the device as float32; writing ``0.05`` rather than
    ``0.05000000074505806`` keeps a table readable and still round-trips the float32.
    ``None`` (a value that does not exist) stays ``None``.
    """
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    if math.isfinite(value) and float(np.float32(value)) == value:
        return float(str(np.float32(value)))
    return value


def is_missing(value: Any) -> bool:
    """``None`` or NaN: a value that does not exist (an empty CSV cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def csv_cell(value: Any) -> Any:
    """The text of a CSV cell: empty when missing, ``repr`` for floats (round-trips)."""
    if is_missing(value):
        return ""  # read back as NaN by pandas, as a missing value by everything else
    if isinstance(value, float):
        return repr(float(value))  # float(): a numpy float64's repr is not a number
    return value


def table_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The columns of a table: the union of the rows' keys, in order of first appearance."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def csv_text(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    line_end: str = "\n",
) -> str:
    """A table as CSV text: a header, then one line per row (:func:`csv_cell` cells).

    Args:
        rows: the rows; a key missing from a row is an empty cell.
        columns: the columns in order; default :func:`table_columns`. A row with a key
            not in ``columns`` is refused (``ValueError``), so no value is dropped.
        line_end: the line terminator.
    """
    columns = table_columns(rows) if columns is None else list(columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator=line_end)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: csv_cell(value) for key, value in row.items()})
    return out.getvalue()


def write_csv(
    path: str | os.PathLike[str],
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    line_end: str = "\n",
) -> None:
    """Write :func:`csv_text` to ``path`` exactly as built (no newline translation)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(csv_text(rows, columns, line_end=line_end))


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a table back: one dict per row, every value as text (empty = missing)."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def format_cell(value: Any, digits: int = 3) -> str:
    """A cell for reading: ``—`` when missing, ``∞``, thousands separators, 3 digits."""
    if value in (None, ""):
        return "—"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}g}" if not value.is_integer() else f"{int(value):,}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A markdown table of ``columns`` (:func:`format_cell` cells); ``(no rows)`` if empty."""
    if not rows:
        return "(no rows)\n"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"
