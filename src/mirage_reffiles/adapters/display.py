"""One display for a whole run: files and bytes done, rate, time left, and a line per download.

On a terminal the block is redrawn in place every half second; anywhere else
(cluster logs, CI) it is printed as plain lines every ``interval`` seconds.
Snakemake's own messages reach the same stream: :meth:`Display.attach`
puts a filter on Snakemake's stream handlers that erases the block, lets the
message through, and draws the block again, so the two never overwrite each
other. Without ``verbose`` the filter also leaves out Snakemake's per-job
blocks and banners, which would otherwise push the display off the screen;
the per-file logs under ``MIRAGE_DATA/.reffiles/logs/`` keep the detail.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TextIO

from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.progress import BOARD, Board

#: Snakemake's events (``record.event``) left out unless verbose: job blocks, banners, statistics.
QUIET_EVENTS = frozenset(
    {
        "workflow_started",
        "job_info",
        "job_started",
        "job_finished",
        "group_info",
        "progress",
        "resources_info",
        "run_info",
        "shellcmd",
    }
)
#: Snakemake's plain messages left out unless verbose (they start with these words).
QUIET_MESSAGES = (
    "Assuming unrestricted shared filesystem usage",
    "Using shell:",
    "Provided cores:",
    "Rules claiming more threads",
    "Provided resources:",
    "Select jobs to execute",
    "Execute ",
    "Complete log:",
    "Job stats:",
    "Building DAG of jobs",
    "host:",
    "Removing output files of failed job",
    "Reasons:",
)
#: Snakemake's warnings that say nothing here: a failed download never leaves an output
#: behind, so there is never a previous version of an update() output to restore.
NOISE = ("Cannot restore ",)
#: The widest download name shown.
NAME_WIDTH = 40


def human_bytes(n: float) -> str:
    """
    >>> human_bytes(1_234_567)
    '1.23 MB'
    """
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


def human_time(seconds: float) -> str:
    """
    >>> human_time(3725)
    '1h02m'
    >>> human_time(75)
    '1m15s'
    """
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Display:
    """The run's progress on ``stream``: see the module's description."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 30.0,
        verbose: bool = False,
        tty: bool | None = None,
        board: Board = BOARD,
    ):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.5 if self.tty else interval
        self.verbose = verbose
        self.board = board
        self.estimates: dict[str, int] = {}  # each file this run fetches: its download size by its row
        self._lock = threading.RLock()
        self._drawn = 0  # lines of the block now on the terminal
        self._started = time.monotonic()
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def plan(self, estimates: dict[str, int]) -> None:
        """Files the run will fetch, each with its size by its row (0 when unknown)."""
        self.estimates.update(estimates)

    @property
    def files(self) -> int:
        return len(self.estimates)

    @property
    def total_bytes(self) -> int:
        """The download sizes: as each server announced them once known, else the rows' estimates."""
        announced = self.board.announced()
        return sum(announced.get(name, estimate) for name, estimate in self.estimates.items())

    # What to show

    def lines(self) -> list[str]:
        running = self.board.running()
        if not self.files and not running:
            return []
        done_bytes = self.board.finished_bytes + sum(p.done for p in running)
        moved = self.board.finished_bytes + sum(p.done - p.resumed_bytes for p in running)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = moved / elapsed
        total = max(self.total_bytes, done_bytes)
        text = f"Fetched {self.board.finished_files} of {max(self.files, self.board.finished_files)} files, "
        text += f"{human_bytes(done_bytes)} of {human_bytes(total)}"
        if total:
            text += f" ({100 * done_bytes / total:.0f}%)"
        text += f", {human_bytes(rate)}/s"
        if rate > 0 and total > done_bytes:
            text += f", {human_time((total - done_bytes) / rate)} left"
        rows = [text]
        for progress in sorted(running, key=lambda p: p.label):
            name = progress.label if len(progress.label) <= NAME_WIDTH else progress.label[: NAME_WIDTH - 1] + "~"
            share = f"{100 * progress.done / progress.total:3.0f}%" if progress.total else "   ?"
            rows.append(f"  {name:<{NAME_WIDTH}} {share}  {human_bytes(progress.rate)}/s")
        return rows

    # Drawing

    def _erase(self) -> None:
        if self.tty and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")  # to the block's first line, clear to the end
            self._drawn = 0

    def _draw(self) -> None:
        rows = self.lines()
        if self.tty:
            self._erase()
            width = 200
            self.stream.write("".join(row[:width] + "\n" for row in rows))
            self._drawn = len(rows)
        elif rows:
            self.stream.write("".join(f"[progress] {row.strip()}\n" for row in rows))
        self.stream.flush()

    def refresh(self) -> None:
        with self._lock:
            if not interrupt.requested():
                self._draw()

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.refresh()
            except (OSError, ValueError):  # the terminal went away (SIGHUP) or the stream closed
                return

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="mirage-reffiles display", daemon=True)
        self._thread.start()

    def summary(self) -> str | None:
        """One line for the end of a run: what it fetched, how fast; None when it fetched nothing."""
        if not self.board.finished_files:
            return None
        elapsed = max(time.monotonic() - self._started, 1e-9)
        done = self.board.finished_bytes
        return (
            f"Fetched {self.board.finished_files} files, {human_bytes(done)} in {human_time(elapsed)} "
            f"({human_bytes(done / elapsed)}/s)"
        )

    def stop(self) -> None:
        """Stop redrawing and take the block off the terminal."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            try:
                self._erase()
                self.stream.flush()
            except (OSError, ValueError):
                pass

    # Snakemake's messages

    def shows(self, record: logging.LogRecord) -> bool:
        """Whether a message of Snakemake's is shown."""
        if interrupt.requested():
            return False  # a stop was asked for: the run ends with one line of ours
        if self.verbose:
            return True
        message = record.msg.lstrip() if isinstance(record.msg, str) else ""
        if message.startswith(NOISE):
            return False
        if record.levelno >= logging.WARNING:
            return True
        if str(getattr(record, "event", "")) in QUIET_EVENTS:
            return False
        return not message.startswith(QUIET_MESSAGES)

    def attach(self, logger: logging.Logger) -> None:
        """Filter Snakemake's stream handlers on ``logger`` through this display."""
        for handler in logger.handlers:
            is_stream = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            if is_stream and not any(isinstance(f, _Passage) for f in handler.filters):
                handler.addFilter(_Passage(self, handler))

    def detach(self, logger: logging.Logger) -> None:
        for handler in logger.handlers:
            for passage in [f for f in handler.filters if isinstance(f, _Passage)]:
                handler.removeFilter(passage)


class _Passage(logging.Filter):
    """Lets a Snakemake message through around the display (see :meth:`Display.attach`)."""

    def __init__(self, display: Display, handler: logging.Handler):
        super().__init__()
        self.display = display
        self.handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.display.shows(record):
            return False
        if not self.display.tty or not self.display._drawn:
            return True
        with self.display._lock:  # erase, print, redraw: one step for the drawing thread
            self.display._erase()
            self.handler.emit(record)
            self.display._draw()
        return False
