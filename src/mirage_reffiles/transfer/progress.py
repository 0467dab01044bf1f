"""Progress of each download: lines in its own log, and its share of the run's display.

Every :class:`Progress` registers with :data:`BOARD` while it runs; the
run-wide display (see :mod:`.display`) reads the board. Bytes replayed from
what an earlier run kept (:meth:`Progress.resumed`) count as done but not as
transfer speed.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO


class Board:
    """The downloads running in this process, for the run-wide display."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: dict[int, Progress] = {}
        self.finished_bytes = 0  # bytes of downloads that finished in this process
        self.finished_files = 0
        self._announced: dict[str, int] = {}  # label -> size the server announced, of finished downloads

    def add(self, progress: Progress) -> None:
        with self._lock:
            self._running[id(progress)] = progress

    def remove(self, progress: Progress, finished: bool) -> None:
        with self._lock:
            if self._running.pop(id(progress), None) is not None and finished:
                self.finished_files += 1
                self.finished_bytes += progress.done
                self._announced[progress.label] = progress.done

    def announced(self) -> dict[str, int]:
        """Each download's size as its server announced it (what it came to, once finished), by label."""
        with self._lock:
            running = {p.label: p.total for p in self._running.values() if p.total is not None}
            return {**self._announced, **running}

    def running(self) -> list[Progress]:
        with self._lock:
            return list(self._running.values())


#: The downloads of this process.
BOARD = Board()


@dataclass
class Progress:
    """Writes bytes, rate and time left to a stream at a fixed interval."""

    label: str
    total: int | None = None
    interval: float = 10.0
    stream: TextIO | None = None
    started: float = field(default_factory=time.monotonic)
    on_board: bool = True  # a download, shown in the run's display (unpacking is not)

    def __post_init__(self):
        self._last = self.started  # first report after one interval: small files only get the final line
        self.done = 0
        self.resumed_bytes = 0  # kept by an earlier try: done, but not transferred now
        if self.on_board:
            BOARD.add(self)

    def _say(self, text: str) -> None:
        print(f"{self.label}: {text}", file=self.stream or sys.stderr, flush=True)

    def resumed(self, offset: int) -> None:
        """The download goes on from ``offset`` bytes kept earlier."""
        self.resumed_bytes = self.done = offset
        self.started = time.monotonic()

    @property
    def rate(self) -> float:
        """Bytes per second transferred by this try (resumed bytes excluded)."""
        return max(self.done - self.resumed_bytes, 0) / max(time.monotonic() - self.started, 1e-9)

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        rate = self.rate
        text = f"{done / 1e6:.1f} MB"
        if self.total:
            left = (self.total - done) / rate if rate > 0 else float("inf")
            text += f" of {self.total / 1e6:.1f} MB, {rate / 1e6:.2f} MB/s, {left:.0f} s left"
        else:
            text += f", {rate / 1e6:.2f} MB/s"
        self._say(text)

    def finish(self, done: int) -> None:
        self.done = done
        elapsed = max(time.monotonic() - self.started, 1e-9)
        moved = done - self.resumed_bytes
        self._say(f"done, {done} bytes ({moved} transferred) in {elapsed:.1f} s ({moved / elapsed / 1e6:.2f} MB/s)")
        BOARD.remove(self, finished=True)

    def stop(self) -> None:
        """Leave the board without finishing (failed or interrupted)."""
        BOARD.remove(self, finished=False)
