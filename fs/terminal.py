"""How commands show long work: a progress bar on a terminal, plain lines elsewhere.

``ProgressView`` writes to stderr (stdout stays for results, e.g. the seq ``gobi sync``
prints). On a terminal it is a rich progress bar with the current detail (which file is
being uploaded); when stderr is not a terminal (a pipe, a log, systemd) it prints one plain
line whenever the figures changed, at most every ``PLAIN_INTERVAL`` seconds, and always the
last one, so logs stay short and readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

PLAIN_INTERVAL = 2.0


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class ProgressView:
    """One task's progress. ``unit`` is "bytes" (sizes shown human-readable) or a noun
    for counted items ("changes", "files")."""

    def __init__(self, title: str, unit: str = "bytes", stream: TextIO | None = None,
                 interactive: bool | None = None):
        self.title = title
        self.unit = unit
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self._last_line = ""
        self._printed = ""
        self._last_print = -PLAIN_INTERVAL
        self._rich = None
        self._task = None
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                MofNCompleteColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            amount = DownloadColumn(binary_units=True) if unit == "bytes" else MofNCompleteColumn()
            self._rich = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  TaskProgressColumn(), amount, TimeRemainingColumn(),
                                  TextColumn("{task.fields[detail]}"),
                                  console=Console(file=self.stream), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(title, total=None, detail="")

    def _amount(self, done: float, total: float) -> str:
        if self.unit == "bytes":
            return f"{human(done)} of {human(total)}"
        return f"{int(done)}/{int(total)} {self.unit}"

    def update(self, done: float, total: float, detail: str = "") -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=done, total=max(total, done, 0) or None,
                              detail=detail)
            return
        line = f"{self.title}: {self._amount(done, total)}" + (f" — {detail}" if detail else "")
        if line == self._last_line:
            return
        self._last_line = line
        now = time.monotonic()
        if now - self._last_print >= PLAIN_INTERVAL:
            print(line, file=self.stream, flush=True)
            self._last_print, self._printed = now, line

    def close(self, final: str | None = None) -> None:
        """Stop the bar; print ``final`` (plain output: the last figures first, if unseen)."""
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self._last_line and self._last_line != self._printed:
            print(self._last_line, file=self.stream, flush=True)
        if final:
            print(final, file=self.stream, flush=True)

    def __enter__(self) -> "ProgressView":
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None


__all__ = ["ProgressView", "human"]
