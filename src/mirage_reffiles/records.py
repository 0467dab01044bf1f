"""The record of each fetched file, kept under MIRAGE_DATA/.reffiles/records/.

A record says where a download came from, its size and SHA-256, when it was
fetched, and every file it produced under MIRAGE_DATA with its size and a
digest (SHA-256, or the CRC-32 gunzipping computed anyway for a file
unpacked from a ``.gz``): what ``verify`` checks the tree against. For a tarball the record
is written last and marks the extraction as complete.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .layout import record_path, temporary_path


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


def write_record(mirage_data: Path, record: Record) -> Path:
    path = record_path(mirage_data, record.file_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    tmp.write_text(json.dumps(asdict(record), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_record(mirage_data: Path, file_id: str) -> Record | None:
    """The record of ``file_id``, or None if it was never fetched (or the record is unreadable)."""
    try:
        data = json.loads(record_path(mirage_data, file_id).read_text())
        data["files"] = [Produced(**item) for item in data["files"]]
        return Record(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None
