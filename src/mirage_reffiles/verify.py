"""Check a tree against the records of what was fetched, and clear what is damaged.

Read-only unless asked to clear: safe on a tree Mirage is using.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .disk import exclusive
from .layout import lock_path, record_path
from .records import read_record
from .unpack import crc32_of, sha256_of

#: What a row of the table can be on disk.
STATUSES = ("ok", "damaged", "missing", "unrecorded")


@dataclass
class Check:
    file_id: str
    status: str  # one of STATUSES
    detail: str = ""
    damaged: tuple[str, ...] = ()  # paths under MIRAGE_DATA that failed


def check_file(mirage_data: Path, row, with_contents: bool = False) -> Check:
    """Compare what a row produced with its record.

    Sizes are always compared; with ``with_contents`` the recorded digest too
    (SHA-256, or CRC-32 for a file unpacked from a ``.gz``; reads every byte).
    A row without a record is ``missing``, or ``unrecorded`` when its unpacked
    file is there all the same (put there by other means).
    """
    record = read_record(mirage_data, row.file_id)
    if record is None:
        if row.destination and (mirage_data / row.destination).is_file():
            return Check(row.file_id, "unrecorded", "present, but not fetched by this build: cannot be checked")
        return Check(row.file_id, "missing")
    problems = []
    for item in record.files:
        path = mirage_data / item.path
        if not path.is_file():
            problems.append((item.path, "missing"))
        elif path.stat().st_size != item.size:
            problems.append((item.path, f"{path.stat().st_size} bytes, recorded {item.size}"))
        elif with_contents and item.sha256 and sha256_of(path) != item.sha256:
            problems.append((item.path, "SHA-256 differs from the record"))
        elif with_contents and item.crc32 is not None and crc32_of(path) != item.crc32:
            problems.append((item.path, "CRC-32 differs from the record"))
    if not problems:
        return Check(row.file_id, "ok")
    detail = "; ".join(f"{path}: {problem}" for path, problem in problems)
    return Check(row.file_id, "damaged", detail, tuple(path for path, _ in problems))


def check_tree(mirage_data: Path, table: pd.DataFrame, with_contents: bool = False) -> pd.DataFrame:
    """One :func:`check_file` per row, as a frame indexed by ``file_id``."""
    checks = [check_file(mirage_data, row, with_contents) for row in table.itertuples()]
    frame = pd.DataFrame([vars(check) for check in checks], columns=["file_id", "status", "detail", "damaged"])
    return frame.set_index("file_id", drop=False)


def summarize(checks: pd.DataFrame, selections: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Files per status for each named selection of the table."""
    rows = []
    for name, selection in selections.items():
        counts = checks.loc[selection.file_id, "status"].value_counts()
        rows.append({"group": name, **{status: int(counts.get(status, 0)) for status in STATUSES}})
    return pd.DataFrame(rows).set_index("group")


def clear_damaged(mirage_data: Path, checks: pd.DataFrame) -> list[str]:
    """Remove the damaged files and their records, so a build fetches them again.

    Returns the ``file_id`` of each row cleared. Works under the same per-file
    lock as a download, so it never races one.
    """
    cleared = []
    for check in checks[checks.status == "damaged"].itertuples():
        with exclusive(lock_path(mirage_data, check.file_id), check.file_id):
            for path in check.damaged:
                (mirage_data / path).unlink(missing_ok=True)
            record_path(mirage_data, check.file_id).unlink(missing_ok=True)
        cleared.append(check.file_id)
    return cleared
