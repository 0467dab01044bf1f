"""Free-space checks and locks on the tree."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from mirage_reffiles.errors import FetchError
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.tree.door import open_file

#: Seconds between looks at a lock another run holds.
LOCK_POLL = 0.2


def existing_ancestor(path: Path) -> Path:
    """``path`` itself, or its nearest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_space(path: Path) -> int:
    """Bytes free on the filesystem that ``path`` is (or will be) on."""
    return shutil.disk_usage(existing_ancestor(path)).free


def require_free_space(path: Path, needed: int, what: str) -> None:
    """Raise :class:`FetchError` unless ``needed`` bytes are free where ``path`` goes."""
    free = free_space(path)
    if needed > free:
        raise FetchError(
            f"not enough free space for {what}: it needs {needed / 1e6:,.1f} MB more "
            f"on the filesystem of {existing_ancestor(path)}, which has {free / 1e6:,.1f} MB free"
        )


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _wait_for_lock(handle, what: str) -> None:
    """Take the lock once its holder lets go; a stop request ends the wait (a blocking flock would not)."""
    while True:
        interrupt.wait(LOCK_POLL, what)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            continue


@contextmanager
def exclusive(lock_file: Path, what: str, log: TextIO | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file``, waiting for another holder.

    The kernel drops the lock when its holder dies, so a killed run never
    leaves a stale lock behind.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open_file(lock_file, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{what}: another run is fetching it; waiting for it to finish", file=log or sys.stderr, flush=True)
            _wait_for_lock(handle, what)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sync(path: Path, flags: int = os.O_RDONLY) -> None:
    descriptor = os.open(path, flags | os.O_NOFOLLOW)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def take_final_names(moves: Iterable[tuple[Path, Path]]) -> None:
    """Rename each ``(staged, final)`` pair once the staged file's bytes are on disk, then make the
    renames themselves durable: after a crash of the machine (not only of this process) a file
    under its final name is whole. The bytes are synced before any rename, so a crash between
    renames leaves whole files, some still at their staged names (docs/benchmarks.md: the cost)."""
    moves = list(moves)
    for staged, _ in moves:
        _sync(staged)
    for staged, final in moves:
        os.replace(staged, final)
    for folder in dict.fromkeys(final.parent for _, final in moves):
        _sync(folder, os.O_DIRECTORY)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, through a temporary name no other run uses."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    try:
        take_final_names([(Path(handle.name), path)])
    finally:
        Path(handle.name).unlink(missing_ok=True)  # gone already, unless the rename failed
