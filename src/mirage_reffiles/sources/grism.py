"""Mirage's grism folders: the files of one version folder of a GitHub repository,
in ``<inst>/GRISM_<INST>/current/``, where Mirage's documentation has users copy them by hand.

Each repository's archive is fetched at the commit the grism table pins
(GitHub serves ``<owner>/<repo>/archive/<commit>.tar.gz``, its members under
``<repo>-<commit>/``). Only the chosen version folder is extracted, into a
staging folder, and it must hold exactly the files the table lists, each
matching its git blob SHA-1, before any of them moves into place. The
archive's own bytes are not checked: GitHub makes it on demand, and they may
change; the blobs may not.

The table (``config/grism_files.csv``) has one row per file; for the build,
:func:`grism_rows` makes one row per instrument shaped like a row of the
reference table, a tarball whose record marks the folder complete, so that
previews, ``status``, ``verify`` and ``repair`` take it like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

import pandas as pd

from mirage_reffiles.errors import TableError, UsageError, VerifyError
from mirage_reffiles.sources.mirage import validate_rows
from mirage_reffiles.sources.rows import frame, urls
from mirage_reffiles.transfer.fetch import fetch_tarball, twice_on_bad_bytes
from mirage_reffiles.transfer.http import RetryPolicy
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.disk import exclusive
from mirage_reffiles.tree.door import Lane, writable
from mirage_reffiles.tree.records import Produced, read_record
from mirage_reffiles.unpack.hashing import git_blob_sha1

#: The ``kind`` of a grism folder's row: not a kind of the reference table.
GRISM_KIND = "grism"

#: The instruments with grism folders, as the table names them.
GRISM_INSTRUMENTS = ("nircam", "niriss")

#: A version folder's name: V, a number, and any suffix (V3b comes after V3, before V4).
_VERSION = re.compile(r"V(\d+)(.*)")


def version_order(name: str) -> tuple[int, str]:
    """Sort key of a version folder's name, by number first (V10 after V9).

    >>> sorted(["V10", "V3b", "V9", "V3"], key=version_order)
    ['V3', 'V3b', 'V9', 'V10']
    """
    match = _VERSION.fullmatch(name)
    return (int(match.group(1)), match.group(2)) if match else (-1, name)


def load_grism_table(path: str | Path, schema: Mapping | None = None) -> pd.DataFrame:
    """Read the grism table (every column as text), with each file's ``version`` folder added.

    With ``schema`` every row is checked (see :func:`.table.validate_rows`);
    each repository must have one commit and one instrument, each path one row.
    """
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if schema is not None:
        validate_rows(table, schema, source=str(path))
    for column in ("commit", "instrument"):
        mixed = table.groupby("repository")[column].nunique()
        if (mixed > 1).any():
            raise TableError(f"{path}: repository {mixed[mixed > 1].index[0]!r} has more than one {column}")
    twice = table[table.duplicated(["repository", "path"])]
    if len(twice):
        raise TableError(f"{path}: {twice.repository.iloc[0]} {twice.path.iloc[0]!r} appears more than once")
    return table.assign(version=table.path.str.split("/").str[0])


def versions(table: pd.DataFrame, instrument: str) -> list[str]:
    """The version folders the table lists for ``instrument``, oldest first."""
    return sorted(set(table.version[table.instrument == instrument]), key=version_order)


def choose_version(table: pd.DataFrame, instrument: str, wanted: str = "") -> str:
    """The version folder to install for ``instrument``: ``wanted``, or the newest when blank.

    Raises :class:`UsageError` naming the versions there are.
    """
    there = versions(table, instrument)
    setting = f"{instrument}_grism_version"
    if not there:
        raise UsageError(f"the grism table lists no files for {instrument}; check grism_table")
    if not wanted:
        return there[-1]
    if wanted not in there:
        raise UsageError(
            f"setting {setting!r}: {wanted!r} is not a version folder of {instrument}'s grism repository; "
            f"choose one of {', '.join(there)}, or leave it blank for the newest ({there[-1]})"
        )
    return wanted


def grism_file_id(instrument: str, version: str) -> str:
    """The row id of ``instrument``'s grism folder at ``version``: it names its record and log."""
    return f"{instrument}_grism_{version}"


def grism_groups() -> dict[str, dict[str, list[str]]]:
    """The grism target groups, as filters over :func:`grism_rows`.

    >>> grism_groups()["niriss_grism"]
    {'instrument': ['niriss'], 'kind': ['grism']}
    """
    return {f"{name}_grism": {"instrument": [name], "kind": [GRISM_KIND]} for name in GRISM_INSTRUMENTS}


def _known_bytes(sizes: pd.Series) -> int:
    return int(pd.to_numeric(sizes, errors="coerce").fillna(0).sum())


def grism_rows(table: pd.DataFrame, wanted: Mapping[str, str], base_url: str, root: str | Path = "") -> pd.DataFrame:
    """One row per instrument of ``wanted`` (instrument -> version, blank for the newest), in
    the one shape of every source (see :mod:`.rows`): the archive at ``base_url``, into ``root``
    (MIRAGE_DATA), its lane the instrument's grism folder.

    Sizes are estimates (``*_exact`` false unless every size is known): the
    download is the whole repository (every version), counted by its files'
    known sizes as if uncompressed; unpacked, the version folder's known sizes.
    """
    rows = []
    for instrument, version in wanted.items():
        version = choose_version(table, instrument, version)
        files = table[table.instrument == instrument]
        folder = files[files.version == version]
        path = f"{files.repository.iloc[0]}/archive/{files.commit.iloc[0]}.tar.gz"
        rows.append(
            {
                "file_id": grism_file_id(instrument, version),
                "source": "grism",
                "root": str(root),
                "urls": base_url + path,
                "lane": layout.grism_folder(instrument),
                "path": path,
                "instrument": instrument,
                "kind": GRISM_KIND,
                "dark_type": "",
                "detector": "",
                "archive": "tar.gz",
                "single_dark": "false",
                "skip_flag": "",
                "size_bytes": str(_known_bytes(files.size_bytes)),
                "size_exact": "false",
                "unpacked_bytes": str(_known_bytes(folder.size_bytes)),
                "unpacked_exact": "true" if (folder.size_bytes != "").all() else "false",
                "last_modified": "",
                "sha256": "",
                "destination": layout.grism_folder(instrument),
                "version": version,
            }
        )
    return frame(rows)


@dataclass
class GrismRequest:
    """One grism folder to fetch, as a build job asks for it: what :func:`fetch_grism` does."""

    url: str  # the repository's archive at the pinned commit
    mirage_data: Path
    file_id: str  # names the record, log and partial download (see grism_file_id)
    instrument: str
    root: str  # the archive's top folder, <repo>-<commit>
    version: str  # the version folder whose files go to current/
    blobs: dict[str, str] = field(default_factory=dict)  # path inside the version folder -> git blob SHA-1
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    archive: str = "tar.gz"  # names the partial download, as for the table's tarballs


def grism_request(table: pd.DataFrame, row, mirage_data: Path, policy: RetryPolicy | None = None) -> GrismRequest:
    """The request that fetches the grism folder of ``row`` (one of :func:`grism_rows`)."""
    files = table[(table.instrument == row.instrument) & (table.version == row.version)]
    repository, commit = files.repository.iloc[0], files.commit.iloc[0]
    return GrismRequest(
        url=urls(row)[0],
        mirage_data=Path(mirage_data),
        file_id=row.file_id,
        instrument=row.instrument,
        root=f"{repository.split('/')[1]}-{commit}",
        version=row.version,
        blobs={path.split("/", 1)[1]: sha1 for path, sha1 in zip(files.path, files.git_blob_sha1, strict=True)},
        policy=policy or RetryPolicy(),
    )


def _renamer(request: GrismRequest):
    """Where each archive member goes: the version folder's into current/; others are left out."""
    folder = layout.grism_folder(request.instrument)

    def rename(name: str) -> str | None:
        parts = PurePosixPath(name).parts
        if parts[:2] != (request.root, request.version):
            return None
        return str(PurePosixPath(folder, *parts[2:]))

    return rename


def _other_versions(request: GrismRequest) -> list[str]:
    """The ids of this instrument's grism folders at other versions that have a record in the tree."""
    records = layout.record_path(request.mirage_data, "x").parent
    prefix = grism_file_id(request.instrument, "")
    return sorted(
        path.stem
        for path in records.glob(f"{prefix}*.json")
        if path.stem != request.file_id and _VERSION.fullmatch(path.stem[len(prefix) :])
    )


def _lane(instrument: str) -> Lane:
    """Where a grism archive may write: the instrument's current/ folder."""
    return Lane(PurePosixPath(layout.grism_folder(instrument)), GRISM_KIND)


def _acceptor(request: GrismRequest):
    """Checks the staged version folder against the table, then clears what it replaces.

    The staged files must be exactly the table's, each with its blob SHA-1;
    else the archive is refused (:class:`VerifyError`) and nothing in the
    tree has changed. Once they pass, the files of another version's record
    that this version does not overwrite are removed, and that record too:
    current/ then holds exactly this version.
    """
    lane = _lane(request.instrument)
    folder = lane.folder

    def accept(staging: Path, files: list[Produced]) -> None:
        got = {PurePosixPath(item.path).relative_to(folder).as_posix() for item in files}
        want = set(request.blobs)
        problems = [f"{name}: not in the archive" for name in sorted(want - got)]
        problems += [f"{name}: not in the table" for name in sorted(got - want)]
        for name in sorted(got & want):
            if (sha1 := git_blob_sha1(staging / folder / name)) != request.blobs[name]:
                problems.append(f"{name}: git blob SHA-1 {sha1}, the table says {request.blobs[name]}")
        if problems:
            raise VerifyError(
                f"{request.url}: version folder {request.version} does not match the grism table "
                f"({len(problems)} problem(s): {'; '.join(problems[:3])}); the archive was discarded"
            )
        keep = {item.path for item in files}
        for other in _other_versions(request):
            record = read_record(request.mirage_data, other)
            for item in record.files if record else []:
                if item.path not in keep and PurePosixPath(item.path).is_relative_to(folder):
                    writable(request.mirage_data, item.path, lane).unlink(missing_ok=True)  # through no link
            layout.record_path(request.mirage_data, other).unlink(missing_ok=True)

    return accept


def fetch_grism(request: GrismRequest, log: TextIO | None = None) -> Path:
    """Fill ``<inst>/GRISM_<INST>/current/`` with the files of ``request``'s version folder.

    Like any tarball (:func:`.fetch.fetch_tarball`): downloaded resumably,
    extracted safely into a staging folder, checked, moved into place, the
    record written last; a refused archive is deleted, and fetched once more
    from the start before the error stands. Only members of the version
    folder are extracted, and only into current/ (its lane). Holds the lock
    of the instrument's folder as well as its own, so two runs asking for two
    versions take turns. Returns the record's path.
    """
    lane = _lane(request.instrument)
    folder_lock = layout.lock_path(request.mirage_data, grism_file_id(request.instrument, "folder"))

    def once() -> Path:
        with exclusive(folder_lock, request.file_id, log):
            return fetch_tarball(
                request.url,
                request.mirage_data,
                request.file_id,
                policy=request.policy,
                lane=lane,
                rename=_renamer(request),
                accept=_acceptor(request),
                log=log,
            )

    return twice_on_bad_bytes(once, request.file_id, log)
