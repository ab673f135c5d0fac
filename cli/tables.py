"""Text tables for the commands that list rows (`registry user list`, `audit list`, ...): a
header row, then one line per row, each column as wide as its widest cell."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import typer


def table_lines(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """The header row and the rows as aligned lines (columns two spaces apart, the last one
    not padded); no lines at all when there are no rows. A cell of `None` shows as `-`."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    if not cells:
        return []
    widths = [max(len(r[i]) for r in [list(headers), *cells]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = [v.ljust(w) for v, w in zip(values[:-1], widths, strict=False)]
        return "  ".join([*padded, values[-1]]).rstrip()

    return [line(list(headers)), *(line(r) for r in cells)]


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print `table_lines`."""
    for text in table_lines(headers, rows):
        typer.echo(text)
