"""The record of each fetched file, kept under MIRAGE_DATA/.reffiles/records/.

A record says where a download came from, its size and SHA-256, when it was
fetched, and every file it produced under MIRAGE_DATA with its size and a
digest (SHA-256, or the CRC-32 gunzipping computed anyway for a file
unpacked from a ``.gz``): what ``verify`` checks the tree against. For a tarball the record
is written last and marks the extraction as complete.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mirage_reffiles.tree.disk import write_atomically
from mirage_reffiles.tree.door import BOOKKEEPING, open_file, writable
from mirage_reffiles.tree.layout import lock_path, record_path


@dataclass
class Produced:
    path: str  # relative to MIRAGE_DATA
    size: int
    sha256: str | None = None
    crc32: int | None = None


@dataclass
class Record:
    file_id: str
    url: str
    size: int
    sha256: str
    files: list[Produced] = field(default_factory=list)
    fetched: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    version: str = ""  # what the files say they are (WebbPSF data's version.txt), when they say


def write_record(mirage_data: Path, record: Record) -> Path:
    path = writable(mirage_data, record_path(mirage_data, record.file_id), BOOKKEEPING)
    write_atomically(path, json.dumps(asdict(record), indent=1) + "\n")  # a name no other run uses
    return path


def claims(mirage_data: Path, but: str) -> dict[str, str]:
    """Every file the records list (path under MIRAGE_DATA -> the ``file_id`` whose record lists it),
    leaving out the record of ``but``: the paths other rows hold."""
    found: dict[str, str] = {}
    for path in sorted(record_path(mirage_data, but).parent.glob("*.json")):
        record = read_record(mirage_data, path.stem) if path.stem != but else None
        for item in record.files if record else []:
            found.setdefault(item.path, record.file_id)
    return found


def load_record(mirage_data: Path, file_id: str) -> tuple[Record | None, str]:
    """The record of ``file_id`` and, when it cannot be used, why not.

    ``(record, "")`` for a usable record; ``(None, "record missing")`` when
    there is none; ``(None, "record unreadable: ...")`` when the file is
    there but is not a record, and ``(None, "record ...")`` when it is the
    record of another file or lists no files (a tarball's record must list
    its members: it is what marks them complete).
    """
    path = record_path(mirage_data, file_id)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, "record missing"
    except (OSError, ValueError) as error:
        return None, f"record unreadable: {error}"
    try:
        data = json.loads(text)
        data["files"] = [Produced(**item) for item in data["files"]]
        record = Record(**data)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        return None, f"record unreadable: {type(error).__name__}: {error}"
    if record.file_id != file_id:
        return None, f"record is of {record.file_id!r}"
    if not record.files:
        return None, "record lists no files"
    return record, ""


def read_record(mirage_data: Path, file_id: str) -> Record | None:
    """The record of ``file_id``, or None if it was never fetched (or the record cannot be used)."""
    return load_record(mirage_data, file_id)[0]


def unusable_records(mirage_data: Path, file_ids: Iterable[str]) -> list[str]:
    """The ``file_ids`` whose record is there but cannot be used (see :func:`load_record`).

    Only the records that exist are read.
    """
    return [
        file_id
        for file_id in file_ids
        if record_path(mirage_data, file_id).exists() and load_record(mirage_data, file_id)[0] is None
    ]


def remove_unusable_records(mirage_data: Path, file_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """Remove the records of ``file_ids`` that cannot be used, so that a build fetches those files again.

    A tarball's record is its build target: left in place, an unusable one
    would look done. Each record is removed under its file's lock, without
    waiting: one that another run holds (it is fetching that file, and will
    write a good record) is left. Returns the ``file_id`` of the records
    removed, and of those left because they were busy.
    """
    removed, busy = [], []
    for file_id in unusable_records(mirage_data, file_ids):
        with try_exclusive(lock_path(mirage_data, file_id)) as locked:
            if not locked:
                busy.append(file_id)
            elif load_record(mirage_data, file_id)[0] is None:  # not rewritten meanwhile
                record_path(mirage_data, file_id).unlink(missing_ok=True)
                removed.append(file_id)
    return removed, busy


@contextmanager
def try_exclusive(lock_file: Path) -> Iterator[bool]:
    """Take the lock that :func:`mirage_reffiles.tree.disk.exclusive` takes, without waiting: yields whether it did."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open_file(lock_file, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
