"""The one progress bar of the harness (bench, demo, generate, search): a thin ``rich`` wrapper."""

from __future__ import annotations

from typing import Any


class Progress:
    """A progress bar on stderr that does nothing when disabled.

    Args:
        description: the label in front of the bar.
        total: steps to completion.
        enabled: ``False``: every method is a no-op (``--json``, ``--no-progress``, not a terminal).
        completed: steps already done (a resumed run).
        transient: erase the bar when it stops.
        counts: show ``done/total`` and the elapsed time.

    Example:
        >>> with Progress("bench", total=10) as bar:
        ...     bar.advance()
    """

    def __init__(self, description: str, total: int, enabled: bool = True, completed: int = 0,
                 transient: bool = True, counts: bool = False) -> None:
        self._p: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) \
                if counts else Progress.get_default_columns()
            self._p = Progress(*columns, transient=transient, console=Console(stderr=True))
            self._task = self._p.add_task(description, total=total, completed=completed)

    def __enter__(self) -> Progress:
        if self._p is not None:
            self._p.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.stop()

    def advance(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def update(self, completed: int | None = None, description: str | None = None) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=completed, description=description)
