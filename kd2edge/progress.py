"""Progress bars (rich, on stderr): the one builder every stage uses.

    with progress_bars() as bars:
        task = bars.task("predict", total=len(x), unit="img")
        task.advance(500)
        task.done()

Disabled, the same calls do nothing, so callers never test for None.
"""
from __future__ import annotations

import contextlib
import sys
import time

TERMINAL = None  # set by kd2edge.capture while converter output (fd 1 and 2) goes to a log file


class _Stderr:
    """The bars' stream: the real terminal while a converter's output is captured, else sys.stderr."""

    def __getattr__(self, name):
        return getattr(TERMINAL or sys.stderr, name)


class Task:
    def __init__(self, bars: "Bars", task_id):
        self.bars, self.id = bars, task_id

    def advance(self, n: float = 1) -> None:
        if self.id is not None:
            self.bars.progress.advance(self.id, n)
            self.bars.tick()

    def set(self, completed: float | None = None, description: str | None = None, total: float | None = None) -> None:
        if self.id is not None:
            fields = {"completed": completed, "description": description, "total": total}
            self.bars.progress.update(self.id, **{k: v for k, v in fields.items() if v is not None})
            self.bars.tick()

    def done(self) -> None:
        if self.id is not None:
            self.bars.progress.remove_task(self.id)


class Bars:
    def __init__(self, progress=None, delay: float = 0.0, auto_refresh: bool = True):
        self.progress, self.delay, self.auto_refresh = progress, delay, auto_refresh
        self.t0 = time.perf_counter()

    def task(self, description: str, total: float, unit: str = "") -> Task:
        if self.progress is None:
            return Task(self, None)
        return Task(self, self.progress.add_task(description, total=total, unit=unit))

    def print(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, highlight=False)

    def tick(self) -> None:
        """Start the display once work has taken `delay` seconds; redraw by hand without auto-refresh."""
        p = self.progress
        if not p.live.is_started and time.perf_counter() - self.t0 >= self.delay:
            p.start()
        if p.live.is_started and not self.auto_refresh:
            p.refresh()


@contextlib.contextmanager
def progress_bars(enabled: bool = True, delay: float = 0.0, auto_refresh: bool = True):
    """Yields `Bars`. They appear once work has taken `delay` seconds (quick runs stay quiet); with
    auto_refresh=False they are redrawn only when a task moves (no refresh thread competing with timed runs)."""
    if not enabled:
        yield Bars()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            unit = task.fields.get("unit")
            return Text(f"{task.speed:,.0f} {unit}/s" if unit and task.speed else "")

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(file=_Stderr()), transient=True,
                        auto_refresh=auto_refresh)
    bars = Bars(progress, delay, auto_refresh)
    if delay <= 0:
        progress.start()
    try:
        yield bars
    finally:
        if progress.live.is_started:
            progress.stop()
