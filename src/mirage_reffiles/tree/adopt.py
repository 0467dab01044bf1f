"""Adopt a tree that Mirage's own downloader made, so nothing complete is fetched again.

Mirage's downloader leaves, in its download folder: ``mirage_data/`` with the
darks gunzipped beside their ``.gz``, each tarball at the top, and the
tarballs' members extracted under ``mirage_data/``. Adopting writes this
build's records for what is complete:

- a dark with its ``.gz`` beside it is adopted when the ``.gz`` is whole
  (gzip CRC, and the table's size and SHA-256 when it pins them) and
  unpacks to exactly the file; one without is adopted when it is what the
  table says (its exact size when pinned, a FITS file); a dark that does
  not match is removed, to be fetched again;
- a tarball Mirage kept is adopted when it is whole and every member is in
  place with the right size and bytes; otherwise it is left to be fetched.

Whatever is read is held to the row's bounds (see :mod:`.transfer.bounds`),
as a download is. The ``.gz`` and ``.tar.gz`` copies are reported, and
removed only when asked, and then only those whose contents were adopted:
the record of their row was made from their very bytes.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mirage_reffiles.errors import UnpackError, VerifyError
from mirage_reffiles.transfer.bounds import Bounds, Expected
from mirage_reffiles.tree.layout import record_path, tarball_member_destination
from mirage_reffiles.tree.records import Produced, Record, read_record, write_record
from mirage_reffiles.tree.verify import matches_table
from mirage_reffiles.unpack.gunzip import GunzipSink
from mirage_reffiles.unpack.hashing import sha256_of

CHUNK = 1 << 20


@dataclass
class Adoption:
    adopted: list[str] = field(default_factory=list)  # file_ids now recorded
    rejected: list[str] = field(default_factory=list)  # present but not matching: left to fetch again
    leftovers: dict[Path, int] = field(default_factory=dict)  # Mirage's .gz / .tar.gz copies, with their bytes
    removed: list[Path] = field(default_factory=list)  # those of them removed (their contents were adopted)
    digests: dict[Path, str] = field(default_factory=dict)  # SHA-256 of each copy read while adopting

    def describe(self, removed: bool) -> str:
        text = f"Adopted {len(self.adopted)} files that Mirage's downloader left complete"
        if self.rejected:
            text += f"; {len(self.rejected)} did not match their archive or the table and will be fetched again"
        if self.removed:
            text += f"; Mirage's {len(self.removed)} archive copies of them ({self._gb(self.removed)}) were removed"
        if remaining := [path for path in self.leftovers if path not in self.removed]:
            text += f"; Mirage's {len(remaining)} archive copies ({self._gb(remaining)}) remain"
            text += (
                " (their contents were not adopted: they are kept)"
                if removed
                else " (remove them with remove_mirage_archives / --remove-mirage-archives)"
            )
        return text

    def _gb(self, paths: list[Path]) -> str:
        return f"{sum(self.leftovers[path] for path in paths) / 1e9:,.2f} GB"


def _gunzip_digest(path: Path, bounds: Bounds, tar: bool, digests: dict[Path, str]) -> tuple[str, int, str] | None:
    """(sha256 of the .gz, unpacked size, sha256 of the unpacked bytes), or None unless it is a whole gzip file
    within ``bounds`` (of the row it stands for: its size and SHA-256 when pinned; unpacked, the tar stream's
    bound with ``tar``, else the file's)."""
    packed = hashlib.sha256()
    sink = GunzipSink(None, hash_output=True, check=bounds.check_tar_stream if tar else bounds.check_unpacked)
    try:
        bounds.announce(path.stat().st_size)  # what a server would announce of it
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                packed.update(chunk)
                sink.write(chunk)
        sink.close()
        if not tar:
            bounds.check_unpacked_total(sink.size)
    except (UnpackError, VerifyError):
        return None
    digests[path] = packed.hexdigest()
    if bounds.expected.sha256 and digests[path] != bounds.expected.sha256:
        return None
    return digests[path], sink.size, sink.sha256


def _adopt_dark(mirage_data: Path, row, url: str, digests: dict[Path, str]) -> bool | None:
    """True if adopted, False if the unpacked file was wrong (and removed), None if absent."""
    final = mirage_data / row.destination
    if not final.is_file():
        return None
    bounds = Bounds(Expected.of_row(row))
    packed = final.with_name(final.name + ".gz")
    if packed.is_file():
        unpacked = _gunzip_digest(packed, bounds, False, digests)
        if unpacked is None or unpacked[1] != final.stat().st_size or unpacked[2] != sha256_of(final):
            final.unlink()
            return False
        packed_sha, size, unpacked_sha = unpacked
        record = Record(row.file_id, url, packed.stat().st_size, packed_sha, [])
    elif matches_table(final, row):  # a copy cut short, or not a FITS file
        final.unlink()
        return False
    else:  # nothing but the table to check it against: recorded as found (no download size or SHA-256)
        size, unpacked_sha = final.stat().st_size, sha256_of(final)
        record = Record(row.file_id, url, 0, "", [])
    record.files.append(Produced(row.destination, size, unpacked_sha))
    write_record(mirage_data, record)
    return True


def _adopt_tarball(mirage_data: Path, archive: Path, row, url: str, digests: dict[Path, str]) -> bool | None:
    if not archive.is_file():
        return None
    bounds = Bounds(Expected.of_row(row))
    packed = _gunzip_digest(archive, bounds, True, digests)
    if packed is None:
        return False
    produced = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = tarball_member_destination(member.name)
                if name is None or not member.isreg():
                    continue
                bounds.check_unpacked(sum(item.size for item in produced) + member.size)  # from its header
                target = mirage_data / name
                if not target.is_file() or target.stat().st_size != member.size:
                    return False
                expected = hashlib.file_digest(tar.extractfile(member), "sha256").hexdigest()
                if sha256_of(target) != expected:
                    return False
                produced.append(Produced(name, member.size, expected))
        bounds.check_unpacked_total(sum(item.size for item in produced))
    except (tarfile.TarError, OSError, EOFError, VerifyError):
        return False
    if not produced:  # an empty archive: nothing it stands for is in the tree
        return False
    write_record(mirage_data, Record(row.file_id, url, archive.stat().st_size, packed[0], produced))
    return True


def _adopted_from(mirage_data: Path, file_id: str, copy: Path, digests: dict[Path, str]) -> bool:
    """Whether the record of ``file_id`` was made from the very bytes of ``copy`` (adopted from it, or the
    same download fetched): only then is ``copy`` no longer needed."""
    record = read_record(mirage_data, file_id)
    if record is None or not record.sha256 or record.size != copy.stat().st_size:
        return False
    return (digests.get(copy) or sha256_of(copy)) == record.sha256


def adopt_mirage_tree(
    download_dir: Path, table: pd.DataFrame, base_url: str, remove_archives: bool = False
) -> Adoption:
    """Record what Mirage's downloader left complete in ``download_dir``.

    MIRAGE_DATA is ``download_dir/mirage_data``; rows already recorded are
    skipped. With ``remove_archives``, Mirage's ``.gz`` and ``.tar.gz``
    copies whose contents were adopted (now or before) are deleted; the
    others are kept and reported.
    """
    mirage_data = download_dir / "mirage_data"
    result = Adoption()
    copies = {}  # each copy of Mirage's, with the row it is a copy of
    for row in table.itertuples():
        # Mirage keeps each dark's .gz beside it and each tarball at the top.
        is_dark = row.archive == "gz"
        copy = mirage_data / (row.destination + ".gz") if is_dark else download_dir / Path(row.path).name
        if copy.is_file():
            result.leftovers[copy] = copy.stat().st_size
            copies[copy] = row.file_id
        if record_path(mirage_data, row.file_id).exists():
            continue
        url = base_url + row.path
        if row.archive == "gz":
            outcome = _adopt_dark(mirage_data, row, url, result.digests)
        else:
            outcome = _adopt_tarball(mirage_data, copy, row, url, result.digests)
        if outcome is True:
            result.adopted.append(row.file_id)
        elif outcome is False:
            result.rejected.append(row.file_id)
    if remove_archives:
        for copy, file_id in copies.items():
            if _adopted_from(mirage_data, file_id, copy, result.digests):
                copy.unlink()
                result.removed.append(copy)
    return result
