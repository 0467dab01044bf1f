"""Stopping a run on request, keeping every byte fetched so far.

A terminal's Ctrl-C (SIGINT to the whole process group), ``scancel`` or
SLURM's time limit (SIGTERM) and a dropped ssh session (SIGHUP) all ask a
run to stop. Downloads run as threads of the Snakemake process, which no
signal reaches: they look at :data:`STOP` between reads (a read never
blocks for long, see :mod:`.transfer.http`) and end with :class:`Interrupted`
at a point they can resume from.
"""

from __future__ import annotations

import threading

from mirage_reffiles.errors import Interrupted

#: Set once a stop was asked for; every running download notices it within a read.
STOP = threading.Event()


def requested() -> bool:
    return STOP.is_set()


def check(what: str = "download") -> None:
    """Raise :class:`Interrupted` if a stop was asked for."""
    if STOP.is_set():
        raise Interrupted(f"{what} stopped on request")


def wait(seconds: float, what: str = "download") -> None:
    """Sleep ``seconds`` (a retry's backoff), waking at once to raise :class:`Interrupted` on a stop."""
    if STOP.wait(seconds):
        raise Interrupted(f"{what} stopped on request")


#: Downloads that stopped on request in this run, with the bytes each kept for the next.
STOPPED: dict[str, int] = {}
