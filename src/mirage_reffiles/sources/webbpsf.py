"""WebbPSF's data: the folder that ``$WEBBPSF_PATH`` (and, for its successor stpsf, ``$STPSF_PATH``) names.

Mirage imports webbpsf in every imaging simulation, and webbpsf reads its
data (filter curves, pupils, OPDs) from that folder; it refuses data whose
``version.txt`` is older than its ``DATA_VERSION_MIN``. STScI publishes the
data as one tarball whose "LATEST" link is updated in place for each data
release (so its bytes are not pinned), holding one top folder,
``webbpsf-data/`` (``stpsf-data/`` for stpsf).

Here it is a tarball like Mirage's own: downloaded resumably into the
bookkeeping of its root, extracted into a staging folder, checked, moved into
place, its record written last (with the data's version). Its lane is the
data folder: members leave their top folder for the configured one, and may
create nothing else. Data older than what the installed webbpsf (or stpsf)
accepts is refused before any of it takes its place.

Which package reads the data is found without importing it (an import of
webbpsf takes seconds and changes the environment): the first of webbpsf and
stpsf whose ``__init__.py`` sets ``DATA_VERSION_MIN``. webbpsf 2 sets none: it
is an alias of stpsf, which it imports, copying ``$WEBBPSF_PATH`` to
``$STPSF_PATH``.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

import pandas as pd

from mirage_reffiles.errors import Outdated, VerifyError
from mirage_reffiles.sources import rows
from mirage_reffiles.transfer.fetch import fetch_tarball, twice_on_bad_bytes
from mirage_reffiles.transfer.http import RetryPolicy
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.door import Lane
from mirage_reffiles.tree.records import Produced, read_record

#: webbpsf's data, newest release (the link webbpsf's own docs and its download code use).
WEBBPSF_LATEST_URL = "https://stsci.box.com/shared/static/qxpiaxsjwo15ml6m4pkhtk36c9jgj70k.gz"
#: stpsf's data, newest release (stpsf's ``auto_download_stpsf_data``).
STPSF_LATEST_URL = "https://stsci.box.com/shared/static/kqfolg2bfzqc4mjkgmujo06d3iaymahv.gz"

#: The environment variable a site sets to serve the data tarball itself (when webbpsf_url is blank).
URL_VARIABLE = "MIRAGE_REFFILES_WEBBPSF_URL"

#: The row's id: names its record, log and partial download.
WEBBPSF_FILE_ID = "webbpsf_data"
#: The ``kind`` of its row.
WEBBPSF_KIND = "webbpsf"
#: The default folder, under MIRAGE_DATA.
DEFAULT_FOLDER = "webbpsf-data"
#: The file that says the data's version, at the top of the folder.
VERSION_FILE = "version.txt"
#: The setting that picks the tarball.
URL_SETTING = "webbpsf_url"


@dataclass(frozen=True)
class Reader:
    """The installed package that reads the data when Mirage imports webbpsf."""

    package: str  # "webbpsf", or "stpsf" (also what webbpsf 2 runs)
    version: str
    data_version_min: tuple[int, ...]
    latest_url: str

    @property
    def minimum(self) -> str:
        return ".".join(map(str, self.data_version_min))


def _data_version_min(init: Path) -> tuple[int, ...] | None:
    """The ``DATA_VERSION_MIN = (x, y, z)`` that the module source ``init`` assigns, if it does."""
    try:
        tree = ast.parse(init.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DATA_VERSION_MIN" for t in node.targets):
            try:
                return tuple(int(part) for part in ast.literal_eval(node.value))
            except (ValueError, TypeError):
                return None
    return None


def installed_reader(path: Sequence[str] | None = None) -> Reader | None:
    """The package that reads WebbPSF's data where Mirage imports webbpsf, looked for on ``path``
    (``sys.path`` by default) without importing it; None when neither webbpsf nor stpsf is installed.
    """
    path = list(sys.path if path is None else path)
    for package, latest in (("webbpsf", WEBBPSF_LATEST_URL), ("stpsf", STPSF_LATEST_URL)):
        spec = importlib.machinery.PathFinder.find_spec(package, path)
        if spec is None or not spec.origin:
            continue
        minimum = _data_version_min(Path(spec.origin))
        if minimum is not None:
            found = next(importlib.metadata.distributions(name=package, path=path), None)
            return Reader(package, found.version if found else "(version unknown)", minimum, latest)
    return None


def default_url(reader: Reader | None) -> str:
    """The tarball to fetch when ``webbpsf_url`` is blank: ``$MIRAGE_REFFILES_WEBBPSF_URL`` if set (a
    site's copy), else the newest data of the package that reads it (webbpsf's when neither is installed)."""
    return os.environ.get(URL_VARIABLE) or (reader.latest_url if reader else WEBBPSF_LATEST_URL)


def parse_version(text: str) -> tuple[int, ...]:
    """A data version as webbpsf compares it: its first three dotted numbers.

    >>> parse_version("1.5.0\\n")
    (1, 5, 0)
    >>> parse_version("2.1.0.dev3")
    (2, 1, 0)
    """
    return tuple(int(part) for part in text.strip().split(".")[:3])


def check_version(text: str, reader: Reader | None, url: str) -> str:
    """The data version ``text`` (a ``version.txt``) says, once the installed ``reader`` accepts it.

    Raises :class:`VerifyError` when it is not a version, and
    :class:`Outdated`, naming both versions and the setting to change, when
    ``reader`` needs newer data.
    """
    version = text.strip()
    try:
        found = parse_version(version)
    except ValueError:
        raise VerifyError(f"{url}: its {VERSION_FILE} says {version[:40]!r}, not a version") from None
    if reader is not None and found < reader.data_version_min:
        raise Outdated(
            f"{url}: WebbPSF data version {version}, but the installed {reader.package} {reader.version} needs "
            f"{reader.minimum} or newer (its DATA_VERSION_MIN); set {URL_SETTING} to a release of {reader.minimum} "
            f"or newer, or leave it blank for the newest data ({reader.latest_url}). Nothing was changed"
        )
    return version


#: Estimated sizes of the data, download and unpacked (STScI's docs give about 70 MB for the tarball).
ESTIMATED_BYTES = (70_000_000, 140_000_000)


def as_rows(url: str, webbpsf_path: str | Path) -> pd.DataFrame:
    """The data as one row of the one shape (see :mod:`.rows`): a tarball from ``url`` whose lane is the
    data folder ``webbpsf_path``, its tree that folder's parent. Its sizes are estimates."""
    root, folder = layout.split_folder(webbpsf_path)
    return rows.frame(
        [
            {
                "file_id": WEBBPSF_FILE_ID,
                "source": "webbpsf",
                "root": str(root),
                "urls": url,
                "archive": "tar.gz",
                "lane": folder,
                "kind": WEBBPSF_KIND,
                "size_bytes": str(ESTIMATED_BYTES[0]),
                "size_exact": "false",
                "unpacked_bytes": str(ESTIMATED_BYTES[1]),
                "unpacked_exact": "false",
            }
        ]
    )


def request(row, reader: Reader | None, policy: RetryPolicy | None = None) -> WebbpsfRequest:
    """The request that fetches ``row`` (of :func:`as_rows`), checked against ``reader``'s minimum."""
    return WebbpsfRequest(rows.urls(row)[0], Path(row.root), row.lane, row.file_id, reader, policy or RetryPolicy())


def outdated(row, reader: Reader | None) -> str:
    """Why the data ``row`` put in place must be fetched again: its recorded version is older than the
    installed ``reader`` accepts (webbpsf was upgraded since); blank when it need not."""
    record = read_record(Path(row.root), row.file_id)
    if reader is None or record is None or not record.version:
        return ""
    try:
        if parse_version(record.version) >= reader.data_version_min:
            return ""
    except ValueError:
        pass
    return (
        f"WebbPSF data version {record.version} in {Path(row.root) / row.lane} is older than the installed "
        f"{reader.package} {reader.version} accepts ({reader.minimum})"
    )


@dataclass
class WebbpsfRequest:
    """WebbPSF's data to fetch, as a build job asks for it: what :func:`fetch_webbpsf` does."""

    url: str
    mirage_data: Path  # the tree (the row's root) that holds the data folder; its bookkeeping is in .reffiles/
    folder: str  # the data folder under root: what WEBBPSF_PATH names
    file_id: str = WEBBPSF_FILE_ID
    reader: Reader | None = None  # the installed package whose minimum the data must meet
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    archive: str = "tar.gz"  # names the partial download


def _renamer(folder: str):
    """Members of the tarball's top folder (whatever it is called) go to ``folder``; nothing else is extracted."""

    def rename(name: str) -> str | None:
        parts = PurePosixPath(name).parts
        return str(PurePosixPath(folder, *parts[1:])) if len(parts) > 1 else None

    return rename


def _acceptor(request: WebbpsfRequest):
    """Reads the staged ``version.txt`` and checks it against the installed package, before any move;
    the version is recorded."""

    def accept(staging: Path, files: list[Produced]) -> str:
        version_file = staging / request.folder / VERSION_FILE
        if not version_file.is_file():
            raise VerifyError(f"{request.url}: no {VERSION_FILE} in its top folder: not WebbPSF's data")
        return check_version(version_file.read_text(errors="replace"), request.reader, request.url)

    return accept


def fetch_webbpsf(request: WebbpsfRequest, log: TextIO | None = None) -> Path:
    """Fill ``root/folder`` with WebbPSF's data; returns its record's path.

    Like any tarball (:func:`.fetch.fetch_tarball`): resumable, extracted
    safely into staging, only into its folder (its lane), checked, moved into
    place, the record (with the data's version) written last; fetched once
    more from the start when its bytes fail a check. Data older than
    ``request.reader`` accepts is refused (:class:`Outdated`), its download
    discarded, and nothing moves.
    """

    def once() -> Path:
        return fetch_tarball(
            request.url,
            request.mirage_data,
            request.file_id,
            policy=request.policy,
            lane=Lane(PurePosixPath(request.folder), WEBBPSF_KIND),
            rename=_renamer(request.folder),
            accept=_acceptor(request),
            log=log,
        )

    record = twice_on_bad_bytes(once, request.file_id, log)
    version = read_record(request.mirage_data, request.file_id).version
    print(f"{request.file_id}: WebbPSF data version {version} in {request.mirage_data / request.folder}", file=log)
    return record
