"""Check a tree against the records of what was fetched, and clear what is damaged.

Read-only unless asked to clear: safe on a tree Mirage is using.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mirage_reffiles.sources.rows import urls
from mirage_reffiles.tree.disk import exclusive
from mirage_reffiles.tree.door import Lane, writable
from mirage_reffiles.tree.layout import lock_path, record_path
from mirage_reffiles.tree.records import Produced, Record, load_record, write_record
from mirage_reffiles.unpack.content import head_of, is_fits
from mirage_reffiles.unpack.hashing import crc32_of, sha1_of, sha256_of

#: What a row of the table can be on disk.
STATUSES = ("ok", "damaged", "missing")


@dataclass
class Check:
    """What :func:`check_file` found for one row of the table."""

    file_id: str
    status: str  # one of STATUSES
    detail: str = ""
    damaged: tuple[str, ...] = ()  # paths under MIRAGE_DATA that failed their record
    record_problem: str = ""  # what is wrong with the record itself, when that is the damage


def _check_kept(row, with_contents: bool) -> Check:
    """A file kept as it is (a CRDS reference) against the row's own pins: its size, and with
    ``with_contents`` its SHA-1. It took its name only once they matched, so it needs no record."""
    path = Path(row.root) / row.destination
    if not path.is_file():
        return Check(row.file_id, "missing")
    size = path.stat().st_size
    if row.size_exact == "true" and size != int(row.size_bytes):
        problem = f"{size} bytes, the server says {row.size_bytes}"
    elif with_contents and row.sha1 and (sha1 := sha1_of(path)) != row.sha1:
        problem = f"SHA-1 {sha1}, the server says {row.sha1}"
    else:
        return Check(row.file_id, "ok")
    return Check(row.file_id, "damaged", f"{row.destination}: {problem}", (row.destination,))


def check_file(row, with_contents: bool = False) -> Check:
    """Compare what a row (of any source) produced with its record, in the row's tree.

    Sizes are always compared; with ``with_contents`` the recorded digest too
    (SHA-256, or CRC-32 for a file unpacked from a ``.gz``; reads every byte).
    A row with no record and nothing on disk is ``missing`` (so is a tarball
    without its record: its record marks the extraction complete). A record
    that cannot be used (garbled, another file's, listing no files, not
    listing the dark), or a dark on disk without its record, is damage: what
    is on disk cannot be checked.
    """
    if not row.archive and row.destination:
        return _check_kept(row, with_contents)
    mirage_data = Path(row.root)
    record, problem = load_record(mirage_data, row.file_id)
    is_dark = row.archive == "gz"
    if record is not None and is_dark and row.destination not in {item.path for item in record.files}:
        record, problem = None, f"record does not list {row.destination}"
    if record is None:
        if problem == "record missing" and not (is_dark and (mirage_data / row.destination).is_file()):
            return Check(row.file_id, "missing")
        if problem == "record missing":
            problem += f": {row.destination} is there, but nothing records what it should be"
        return Check(row.file_id, "damaged", problem, record_problem=problem)
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


def check_tree(rows: pd.DataFrame, with_contents: bool = False) -> pd.DataFrame:
    """One :func:`check_file` per row, as a frame indexed by ``file_id``."""
    checks = [check_file(row, with_contents) for row in rows.itertuples()]
    frame = pd.DataFrame([vars(check) for check in checks], columns=list(Check.__dataclass_fields__))
    return frame.set_index("file_id", drop=False)


def summarize(checks: pd.DataFrame, selections: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Files per status for each named selection of the table."""
    rows = []
    for name, selection in selections.items():
        counts = checks.loc[selection.file_id, "status"].value_counts()
        rows.append({"group": name, **{status: int(counts.get(status, 0)) for status in STATUSES}})
    return pd.DataFrame(rows).set_index("group")


def matches_table(path: Path, row) -> str:
    """Why the unpacked dark at ``path`` is not what ``row`` says it is; "" when nothing says it is not.

    Its size must be the row's unpacked size when that is exact, and it must
    begin as a FITS file does.
    """
    size = path.stat().st_size
    if row.unpacked_exact == "true" and size != int(row.unpacked_bytes):
        return f"{size} bytes, the table says {row.unpacked_bytes}"
    if not is_fits(head_of(path)):
        return "not a FITS file"
    return ""


@dataclass
class Repair:
    """What :func:`clear_damaged` did."""

    cleared: list[str] = field(default_factory=list)  # file_ids removed, for a build to fetch again
    recorded: list[str] = field(default_factory=list)  # darks that matched the table, recorded again as they are
    notes: list[str] = field(default_factory=list)  # one line per row repaired


def clear_damaged(table: pd.DataFrame, checks: pd.DataFrame) -> Repair:
    """Remove the damaged files and their records, so a build fetches them again.

    A dark whose record is missing or cannot be used is checked against the
    table instead (:func:`matches_table`): if it passes it is recorded again,
    with the CRC-32 computed now; otherwise it is removed. A tarball whose
    record cannot be used loses the record: which members it had is unknown,
    so it is extracted again. Works under the same per-file lock as a
    download, so it never races one.
    """
    repair = Repair()
    for check in checks[checks.status == "damaged"].itertuples():
        row = table.loc[check.file_id]
        mirage_data = Path(row.root)
        with exclusive(lock_path(mirage_data, check.file_id), check.file_id):
            if check.record_problem and check_file(row).status == "ok":
                continue  # another run fetched it meanwhile
            dark = writable(mirage_data, row.destination, Lane()) if row.archive == "gz" else None
            if check.record_problem and dark is not None and dark.is_file():
                if not (mismatch := matches_table(dark, row)):
                    produced = Produced(row.destination, dark.stat().st_size, crc32=crc32_of(dark))
                    write_record(mirage_data, Record(row.file_id, urls(row)[0], 0, "", [produced]))
                    repair.recorded.append(check.file_id)
                    repair.notes.append(f"RECORDED {check.file_id}: {row.destination} matches the table")
                    continue
                dark.unlink()
                repair.notes.append(f"REMOVED {check.file_id}: {row.destination}: {mismatch}")
            for path in check.damaged:  # removed through no link, as they were written
                writable(mirage_data, path, Lane()).unlink(missing_ok=True)
            record_path(mirage_data, check.file_id).unlink(missing_ok=True)
        repair.cleared.append(check.file_id)
    return repair


def still_to_fetch(table: pd.DataFrame, lists: Iterable[Path]) -> list[str]:
    """The rows on ``lists`` (of earlier repairs: one ``file_id`` a line) that are still missing.

    A repair that fails before fetching all it removed leaves its list: what
    is on it is no longer damaged, only missing, and the next repair fetches it.
    """
    file_ids = dict.fromkeys(file_id for path in lists for file_id in path.read_text().split())
    return [
        file_id for file_id in file_ids if file_id in table.index and check_file(table.loc[file_id]).status == "missing"
    ]
