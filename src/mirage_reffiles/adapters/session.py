"""A run as the person at the terminal sees it: live progress, stopping on request, short answers.

The workflow calls :func:`begin` while it is read, :func:`start` when jobs
are about to run (``onstart``) and :func:`end` when they are over
(``onsuccess``/``onerror``); :func:`refuse` ends a run before any download
with a few lines and no traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

from mirage_reffiles.adapters.display import Display, human_bytes
from mirage_reffiles.errors import RunRefused, UsageError
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.progress import BOARD

#: Signals that ask a run to stop: Ctrl-C, scancel or a time limit, a dropped ssh session.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: Set by the Python API: refusals are raised to the caller rather than printed.
QUIET = False

_display: Display | None = None
_restore: dict = {}
_stopped_by: str | None = None  # the name of the signal that stopped the run


def snakemake_logger() -> logging.Logger:
    from snakemake.logging import logger

    return logger


def begin(verbose: bool, interval: float, main: bool = True) -> Display:
    """While the workflow is read: filter Snakemake's messages through a new display, and
    stop at once on a signal. Not ``main`` (a module of another workflow): the signals stay
    the host's."""
    global _display, _stopped_by
    interrupt.STOP.clear()
    interrupt.STOPPED.clear()
    _stopped_by = None
    if _display is not None:
        _display.detach(snakemake_logger())
    _display = Display(interval=interval, verbose=verbose)
    if not main:  # a module: what the run prints, and its signals, are the host workflow's
        return _display
    _display.attach(snakemake_logger())
    if not QUIET:  # the Python API's caller keeps Python's own Ctrl-C until jobs run
        _install(_before_jobs)
    return _display


def _before_jobs(signum, frame):
    """A stop signal while the workflow is read or its jobs planned: nothing is being fetched."""
    if interrupt.STOP.is_set():
        _end_now(signum)  # a cluster job's download that did not stop at the first
    interrupt.STOP.set()
    if BOARD.running():  # a cluster job's download (no onstart there): it stops at its next read
        return
    name = signal.Signals(signum).name
    with contextlib.suppress(OSError):
        print(f"Stopped on {name} before any download started.", file=sys.stderr, flush=True)
    os._exit(128 + signum)  # nothing is open for writing yet: no need to unwind Snakemake


def _install(handler) -> None:
    for number in STOP_SIGNALS:
        try:
            previous = signal.signal(number, handler)
        except ValueError:  # not the main thread: leave signals alone
            return
        _restore.setdefault(number, previous)


def plan(missing) -> None:
    """Add a target's rows still to fetch (a frame of :mod:`.sources.rows`) to what the display counts toward."""
    if _display is not None:
        sizes = [int(size) if size.isdigit() else 0 for size in missing.size_bytes]
        _display.plan(dict(zip(missing.file_id, sizes, strict=True)))


def _on_signal(scheduler):
    def handler(signum, frame):
        global _stopped_by
        if interrupt.STOP.is_set():
            _end_now(signum)  # asked again: whatever is still running, the run ends here
        _stopped_by = signal.Signals(signum).name
        interrupt.STOP.set()
        if scheduler is not None:
            scheduler.exit_gracefully()  # schedule nothing more; wait for the running jobs, which stop now

    return handler


def _end_now(signum: int) -> None:
    """A second stop signal: end the process at once, even while a job or Snakemake does not return.

    Nothing is lost: every file takes its final name only once whole and
    checked, and what a download fetched is on disk to resume from (as after
    ``kill -9``).
    """
    with contextlib.suppress(OSError):  # standard error may be a closed pipe
        print(
            f"Stopped on {signal.Signals(signum).name}, asked twice: ending now without waiting for the downloads;"
            " the bytes fetched are kept. Run the same command again to continue.",
            file=sys.stderr,
            flush=True,
        )
    os._exit(128 + signum)


def start(workflow) -> None:
    """When jobs are about to run: stop on a signal, and show progress."""
    _display.attach(snakemake_logger())  # handlers added since the workflow was read
    _install(_on_signal(getattr(workflow, "scheduler", None)))
    _display.start()


def end(success: bool) -> None:
    """When the jobs are over: the display comes down; a stopped run says what it kept and
    ends here, with the exit status of a run a signal ended."""
    for number, previous in _restore.items():
        signal.signal(number, previous)
    _restore.clear()
    if _display is not None:
        _display.stop()
        if success and not QUIET and (line := _display.summary()):
            print(line, file=sys.stderr, flush=True)
    if interrupt.STOP.is_set() and not QUIET:
        print(stopped_line(), file=sys.stderr, flush=True)
        # The shell's convention for a run a signal ended (130 for Ctrl-C), instead of Snakemake's 1.
        signum = signal.Signals[_stopped_by] if _stopped_by else signal.SIGINT
        raise SystemExit(128 + signum)


def stopped_line() -> str:
    """One line: what was stopped, what is kept, what to do."""
    why = _stopped_by or "a stop request"
    stopped = interrupt.STOPPED
    if not stopped:
        return f"Stopped on {why}; nothing was being downloaded. Run the same command again to continue."
    names = sorted(stopped)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    kept = sum(stopped.values())
    return (
        f"Stopped on {why}: {len(names)} download(s) interrupted ({shown}), {human_bytes(kept)} kept "
        "for resuming. Run the same command again to continue."
    )


def refuse(error: Exception) -> RunRefused:
    """Print ``error`` as a short message and return the exit that ends the run with it.

    Usage mistakes exit with 2, failures with 1.
    """
    code = 2 if isinstance(error, UsageError) else 1
    if not QUIET:
        print(f"Error: {error}", file=sys.stderr, flush=True)
    return RunRefused(error, code)
