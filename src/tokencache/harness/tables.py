"""The one way the harness prints a table: ``rich``, at most the terminal's width (80 when piped).

The first column (the method or config name) is never wrapped or truncated; the other columns wrap
(headers included) so that the table fits. Errors go under the table, one per line, never into a cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WIDTH = 80


def render(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], errors: Sequence[str] = (),
           width: int | None = None) -> str:
    """The table as text of at most ``width`` columns (default: the terminal's, else 80)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    width = width or _width()
    console = Console(file=buf, width=width, no_color=True, highlight=False, emoji=False)
    for t in _tables(title, header, rows, width):
        console.print(t)
    for e in errors:
        console.print(e, markup=False, highlight=False, overflow="fold")
    return buf.getvalue()


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], errors: Sequence[str] = ()) -> None:
    """Print :func:`render`'s table to stdout (with colour on a terminal)."""
    from rich.console import Console

    width = _width()
    console = Console(width=width)
    for t in _tables(title, header, rows, width):
        console.print(t)
    for e in errors:
        console.print(e, markup=False, highlight=False, overflow="fold")


def _width() -> int:
    import shutil
    import sys

    return shutil.get_terminal_size((WIDTH, 24)).columns if sys.stdout.isatty() else WIDTH


def _tables(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[Any]:
    """One table, or where its columns cannot fit ``width`` side by side, several: each repeats the first column."""
    if not header:
        return []

    def need(i: int) -> int:  # the narrowest a column gets: its longest header word or cell, plus padding
        words = [w for w in header[i].split()] + [r[i] for r in rows if i < len(r)]
        return max(len(w) for w in words) + 2

    first = need(0)
    groups: list[list[int]] = [[]]
    used = first
    for i in range(1, len(header)):
        if groups[-1] and used + need(i) > width:
            groups.append([])
            used = first
        groups[-1].append(i)
        used += need(i)
    out = []
    for k, cols in enumerate(groups):
        sub_title = title if k == 0 else f"{title} ({k + 1}/{len(groups)})" if title else ""
        sub_rows = [[r[0], *(r[i] if i < len(r) else "" for i in cols)] for r in rows]
        out.append(_table(sub_title, [header[0], *(header[i] for i in cols)], sub_rows))
    return out


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    from rich import box
    from rich.table import Table

    first = max([len(header[0]), *(len(r[0]) for r in rows)]) if header else 0
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), title_justify="left")
    for i, col in enumerate(header):
        if i == 0:
            t.add_column(col, no_wrap=True, min_width=first)
        else:
            t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(*r)
    return t
