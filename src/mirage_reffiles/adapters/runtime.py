"""Keeping Snakemake's own costs out of a run: garbage collection and exit.

Measured with ``py-spy`` and ``strace`` on this project's benchmark
(docs/benchmarks.md), a run spends time on work that does nothing for it:

- Python's garbage collector walks every object in the process, again and
  again while the DAG is built and once more at exit: Snakemake, pandas and
  their imports are about a million objects, none of them garbage. A no-op
  run took 0.6 s longer for it; importing Snakemake alone runs two or three
  full collections (0.15 to 0.3 s on a 2-core machine, see
  docs/benchmarks.md).
- Snakemake's job scheduler starts a one-second ``threading.Timer`` after each
  scheduling round (to look again once its jobs-per-second limit allows).
  They are not daemon threads, so the interpreter waits for the last of them
  before it exits: up to a second after every build.

:func:`hold` keeps the collector off while Snakemake is imported and the
workflow read, where this package starts the process (the Python API and its
command); :func:`freeze` takes what exists out of the collector's reach once the
workflow is loaded (and turns it back on); :func:`settle` (for ``onsuccess``
and ``onerror``) also cancels the timers; :func:`unsettle` gives the objects
back to the collector for a process that goes on.
"""

from __future__ import annotations

import gc
import threading

#: Snakemake's method (its spelling) whose timers only ask the finished scheduler to look again.
RESCHEDULING = "_schedule_reevalutation"


_held = False  # hold() turned the collector off


def hold() -> None:
    """No garbage collection until :func:`freeze` or :func:`unsettle`: what is made until then (Snakemake's
    modules, the workflow) is all in use."""
    global _held
    if gc.isenabled():
        gc.disable()
        _held = True


def _release() -> None:
    global _held
    if _held:
        gc.enable()
        _held = False


def freeze() -> None:
    """Leave every object made so far out of garbage collection (they are all in use); collect what comes
    after again, if :func:`hold` stopped it."""
    gc.freeze()
    _release()


def cancel_rescheduling_timers() -> int:
    """Cancel the scheduler's pending re-evaluation timers; returns how many."""
    cancelled = 0
    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and RESCHEDULING in getattr(function, "__qualname__", ""):
            thread.cancel()
            cancelled += 1
    return cancelled


def settle() -> None:
    """Call when a run is over: the process can exit at once."""
    cancel_rescheduling_timers()
    freeze()


def unsettle() -> None:
    """Give the objects :func:`freeze` set aside back to the garbage collector (on again, if :func:`hold`
    stopped it and the workflow ended before its :func:`freeze`)."""
    gc.unfreeze()
    _release()
