"""Run ``snakemake`` (the arguments after this script's) and note when each phase of the run begins and ends.

    python bench/timeline.py EVENTS_FILE -s Snakefile --cores 8 all --config ...

Each line of EVENTS_FILE is ``<time.monotonic()> <begin|end> <phase>``: the same clock as the test server's
request log (:class:`mirage_reffiles.testing.server.Request`), so a benchmark puts both on one timeline. The
phases are functions of Snakemake and of this package, wrapped before the workflow is read; the first line is
the interpreter's start (from the process's start time), the last one its exit (``atexit``).
"""

from __future__ import annotations

import atexit
import functools
import gc
import importlib
import os
import sys
import time
from pathlib import Path

EVENTS = open(sys.argv[1], "a", buffering=1)  # noqa: SIM115 (open until the process exits)


def note(kind: str, phase: str) -> None:
    EVENTS.write(f"{time.monotonic():.4f} {kind} {phase}\n")


def process_start() -> float:
    """When this process began, on the clock of ``time.monotonic()`` (field 22 of /proc/self/stat)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.monotonic() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


EVENTS.write(f"{process_start():.4f} begin process\n")


def collected(phase: str, info: dict, began: list[float] = [0.0]) -> None:  # noqa: B006 (state across calls)
    """Garbage collections are phases too: where they run, and how long."""
    if phase == "start":
        began[0] = time.monotonic()
    elif time.monotonic() - began[0] > 0.0005:
        name = f"gc{info['generation']}"
        EVENTS.write(f"{began[0]:.4f} begin {name}\n{time.monotonic():.4f} end {name}\n")


gc.callbacks.append(collected)
note("begin", "import snakemake")
import snakemake.cli  # noqa: E402

note("end", "import snakemake")

#: (module, attribute path, phase): what is timed. Nested phases (ours inside Snakemake's) are fine.
PHASES = [
    ("snakemake.workflow", "Workflow.include", "read the workflow"),
    ("snakemake.dag", "DAG.init", "build the DAG"),
    ("mirage_reffiles.adapters.settings", "check_config", "check the config"),
    ("mirage_reffiles.sources.mirage", "load_table", "load and check the table"),
    ("mirage_reffiles.tree.plan", "make_plan", "plan"),
    ("mirage_reffiles.transfer.probe", "probe_any", "probe the server"),
    ("mirage_reffiles.adapters.session", "start", "onstart"),
    ("mirage_reffiles.transfer.fetch", "fetch_logged", "the job"),
    ("snakemake.dag", "DAG.finish", "Snakemake's bookkeeping of a finished job"),
    ("mirage_reffiles.adapters.runtime", "settle", "settle"),
    ("mirage_reffiles.adapters.session", "end", "end of the display, summary"),
    ("mirage_reffiles.adapters.envfile", "write_env_file", "env file"),
]


def timed(function, phase: str):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        note("begin", phase)
        try:
            return function(*args, **kwargs)
        finally:
            note("end", phase)

    return wrapper


note("begin", "import mirage_reffiles")  # what the workflow imports of it, at least
modules = {module_name: importlib.import_module(module_name) for module_name, _, _ in PHASES}
note("end", "import mirage_reffiles")
for module_name, path, phase in PHASES:
    owner = modules[module_name]
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    setattr(owner, name, timed(getattr(owner, name), phase))

atexit.register(note, "end", "process")
sys.argv = ["snakemake", *sys.argv[2:]]
snakemake.cli.main()
