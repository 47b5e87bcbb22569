"""Progress for people and for logs: one callback ``(stage, done, total, metrics=None)`` for ``eval`` and ``harden``.

A terminal gets rich bars. A log (stderr piped, as in every CI job) gets plain lines: one when a stage starts, one at
every step the caller marks as a boundary (an attack finished on a batch, an epoch scored), one when a stage ends, and a
heartbeat at least every :data:`HEARTBEAT_SECONDS` in between, so a slow job is never mistaken for a hung one. Each
line says what runs, done/total, the time spent and the time left. Under GitHub Actions every stage is folded in a
``::group::`` block, and the line that ends it is printed after the block, so the folded log still reads as a summary.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

HEARTBEAT_SECONDS = 30.0

Describe = Callable[[dict[str, Any]], str | None]  # a stage's closing metrics → the words of its summary line


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a log line, exact enough to compare two lines."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LogProgress:
    """Plain progress lines for a log; see the module docstring. ``write`` prints one line; ``clock`` is injectable
    so tests need not sleep; :meth:`close` (or leaving the ``with`` block) stops the heartbeat."""

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        github: bool = False,
        interval: float = HEARTBEAT_SECONDS,
        describe: Describe | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: bool = True,
    ):
        self.write, self.github, self.interval, self.describe, self.clock = write, github, interval, describe, clock
        self.lock = threading.Lock()
        self.begun = self.last_line = clock()
        self.stage: str | None = None
        self.stage_started = 0.0
        self.done = self.total = 0
        self.detail = ""
        self.open_group = False
        self.finished = True  # no stage runs until the first call
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="hardenctl-progress", daemon=True) if heartbeat else None
        if self.thread is not None:
            self.thread.start()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, stage: str, done: int, total: int, metrics: dict[str, Any] | None = None) -> None:
        with self.lock:
            summary = self.describe(metrics) if metrics and self.describe is not None else None
            if stage != self.stage or (self.finished and done < total and summary is None):
                self._begin(stage, total)
            self.done, self.total = done, total
            self.detail = str((metrics or {}).get("detail") or "")
            if summary is not None:  # the stage's result (an epoch scored): after its block, once
                self._end_group()
                self._emit(f"{stage}: {summary}")
                self.finished = True
            elif done >= total and not self.finished:
                self._end_group()
                self._emit(f"{stage}: {done}/{total} done in {duration(self.clock() - self.stage_started)}")
                self.finished = True
            elif self.detail or self.clock() - self.last_line >= self.interval:
                self._emit(self._status())

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2 * self.interval)
        with self.lock:
            self._end_group()

    def _begin(self, stage: str, total: int) -> None:
        self._end_group()
        self.stage, self.stage_started, self.finished = stage, self.clock(), False
        if self.github:
            self.write(f"::group::{stage}")
            self.open_group = True
        self._emit(f"{stage}: started, 0/{total}")

    def _end_group(self) -> None:
        if self.open_group:
            self.write("::endgroup::")
            self.open_group = False

    def _status(self) -> str:
        """What runs, done/total, the time spent on it and the time left (once something is done)."""
        now = self.clock()
        if self.stage is None or self.finished:
            last = f"; last: {self.stage} finished" if self.stage is not None else ""
            doing = f", {self.detail}" if self.detail else ""
            return f"working{doing}, {duration(now - self.begun)} elapsed{last}"
        spent = now - self.stage_started
        share = self.done / self.total if self.total else 0.0
        left = f", about {duration(spent / share - spent)} left" if share > 0 else ""
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.stage}: {self.done}/{self.total} ({share:.0%}){detail}, {duration(spent)} elapsed{left}"

    def _emit(self, line: str) -> None:
        self.write(line)
        self.last_line = self.clock()

    def _beat(self) -> None:
        while not self.stop.wait(min(self.interval, 5.0)):
            with self.lock:
                if self.clock() - self.last_line >= self.interval:
                    self._emit(self._status())
