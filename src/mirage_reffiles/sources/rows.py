"""The one shape of a row: what every source turns its settings into.

A source (Mirage's table, the grism repositories, a CRDS context, ...) is a
module that makes rows of this shape; everything after that (the targets, the
preview, ``status``, ``verify``, ``repair``, the live display) reads rows and
never asks which source made them. A row is one thing to fetch:

- ``file_id``: unique over every source; names its record, log and lock.
- ``source``: the source's name (``mirage``, ``grism``, ``crds``, ...).
- ``root``: the tree it writes (MIRAGE_DATA, a CRDS cache, ...); its
  bookkeeping (records, partial downloads, locks) lives in ``root/.reffiles/``.
- ``urls``: where its bytes come from, every source in order (space-separated).
- ``archive``: how it is unpacked: ``gz`` (gunzipped to ``destination``),
  ``tar.gz`` (members extracted under its lane), or blank (kept as it is, at
  ``destination``).
- ``destination``: the file it makes, relative to ``root`` (blank for a tarball).
- ``lane``: the folder under ``root`` it may write (for a single file, the file).
- pins: ``size_bytes``/``size_exact`` (the download), ``unpacked_bytes``/
  ``unpacked_exact``, ``sha256`` (the download), ``sha1`` (the file as it is
  kept, for rows kept as they are).
- what selections filter on: ``instrument``, ``kind``, ``dark_type``,
  ``detector``, ``single_dark``, ``skip_flag``; and ``path`` (on its server),
  ``last_modified``, ``version``.

Every value is text (blank when not known), as in the table's CSV.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import pandas as pd

from mirage_reffiles.errors import TableError

COLUMNS = (
    "file_id", "source", "root", "urls", "path", "archive", "destination", "lane",
    "size_bytes", "size_exact", "unpacked_bytes", "unpacked_exact", "sha256", "sha1",
    "instrument", "kind", "dark_type", "detector", "single_dark", "skip_flag", "last_modified", "version",
)  # fmt: skip


def frame(rows: Iterable[Mapping[str, str]] | pd.DataFrame) -> pd.DataFrame:
    """Rows as a frame of the one shape, indexed by ``file_id``; a column a source leaves out is blank."""
    data = pd.DataFrame(rows if isinstance(rows, pd.DataFrame) else list(rows), dtype=str)
    for column in COLUMNS:
        if column not in data.columns:
            data[column] = ""
    return data.fillna("").set_index("file_id", drop=False)


def combine(*frames: pd.DataFrame) -> pd.DataFrame:
    """Rows of several sources as one frame; no two of them may share an id or claim one file.

    Raises :class:`TableError` naming both rows otherwise.
    """
    frames = [item for item in frames if len(item)]
    rows = frame(pd.concat(frames, ignore_index=True)) if frames else frame([])
    check_claims(rows)
    return rows


def check_claims(rows: pd.DataFrame) -> None:
    """Refuse two rows with one id, or two rows whose files or lanes would be the same path.

    A lane may lie inside another's (a kind nested in another's folder);
    the write of each file is checked again as it lands.
    """
    twice = rows.file_id[rows.file_id.duplicated()]
    if len(twice):
        raise TableError(f"file_id {twice.iloc[0]!r} appears in more than one row (ids are unique over every source)")
    claims = {}
    for row in rows.itertuples():
        if row.archive == "tar.gz" or not row.destination:
            continue
        claim = (row.root, row.destination)
        if claim in claims:
            raise TableError(f"rows {claims[claim]!r} and {row.file_id!r} both write {row.destination}")
        claims[claim] = row.file_id


def urls(row) -> list[str]:
    """Where a row's bytes come from, in order."""
    return str(row.urls).split()


def lane_of(rows: pd.DataFrame, root: str | Path, path: str) -> pd.DataFrame:
    """The tarball rows under ``root`` whose lane holds ``path`` (relative to ``root``),
    the innermost lane only: a member of a kind nested in another's folder is that kind's."""
    path = PurePosixPath(path)
    tarballs = rows[(rows.archive == "tar.gz") & (rows.root == str(root)) & (rows.lane != "")]
    inside = tarballs[[path.is_relative_to(lane) and path != PurePosixPath(lane) for lane in tarballs.lane]]
    if not len(inside):
        return inside
    deepest = max(len(PurePosixPath(lane).parts) for lane in inside.lane)
    return inside[[len(PurePosixPath(lane).parts) == deepest for lane in inside.lane]]
