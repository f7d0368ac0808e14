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
    console = Console(file=buf, width=width or _width(), no_color=True, highlight=False, emoji=False)
    console.print(_table(title, header, rows))
    for e in errors:
        console.print(e, markup=False, highlight=False, overflow="fold")
    return buf.getvalue()


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], errors: Sequence[str] = ()) -> None:
    """Print :func:`render`'s table to stdout (with colour on a terminal)."""
    from rich.console import Console

    console = Console(width=_width())
    console.print(_table(title, header, rows))
    for e in errors:
        console.print(e, markup=False, highlight=False, overflow="fold")


def _width() -> int:
    import shutil
    import sys

    return shutil.get_terminal_size((WIDTH, 24)).columns if sys.stdout.isatty() else WIDTH


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
