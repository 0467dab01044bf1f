"""Adopt a tree that Mirage's own downloader made, so nothing complete is fetched again.

Mirage's downloader leaves, in its download folder: ``mirage_data/`` with the
darks gunzipped beside their ``.gz``, each tarball at the top, and the
tarballs' members extracted under ``mirage_data/``. Adopting writes this
build's records for what is complete:

- a dark with its ``.gz`` beside it is adopted when the ``.gz`` is whole
  (gzip CRC) and unpacks to exactly the file; one without is adopted as it is;
  a dark that does not match its ``.gz`` is removed, to be fetched again;
- a tarball Mirage kept is adopted when it is whole and every member is in
  place with the right size and bytes; otherwise it is left to be fetched.

The ``.gz`` and ``.tar.gz`` copies are reported, and removed only when asked.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mirage_reffiles.errors import UnpackError
from mirage_reffiles.tree.layout import record_path, tarball_member_destination
from mirage_reffiles.tree.records import Produced, Record, write_record
from mirage_reffiles.unpack.gunzip import GunzipSink
from mirage_reffiles.unpack.hashing import sha256_of

CHUNK = 1 << 20


@dataclass
class Adoption:
    adopted: list[str] = field(default_factory=list)  # file_ids now recorded
    rejected: list[str] = field(default_factory=list)  # present but not matching: left to fetch again
    leftovers: list[Path] = field(default_factory=list)  # Mirage's .gz / .tar.gz copies

    leftover_bytes: int = 0

    def describe(self, removed: bool) -> str:
        text = f"Adopted {len(self.adopted)} files that Mirage's downloader left complete"
        if self.rejected:
            text += f"; {len(self.rejected)} did not match their archive and will be fetched again"
        if self.leftovers:
            text += f"; Mirage's {len(self.leftovers)} archive copies ({self.leftover_bytes / 1e9:,.2f} GB) "
            text += (
                "were removed" if removed else "remain (remove them with remove_mirage_archives / --remove-archives)"
            )
        return text


def _gunzip_digest(path: Path) -> tuple[str, int, str] | None:
    """(sha256 of the .gz, unpacked size, sha256 of the unpacked bytes), or None if not a whole gzip file."""
    packed = hashlib.sha256()
    sink = GunzipSink(None, hash_output=True)
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                packed.update(chunk)
                sink.write(chunk)
        sink.close()
    except UnpackError:
        return None
    return packed.hexdigest(), sink.size, sink.sha256


def _adopt_dark(mirage_data: Path, row, url: str) -> bool | None:
    """True if adopted, False if the unpacked file was wrong (and removed), None if absent."""
    final = mirage_data / row.destination
    if not final.is_file():
        return None
    packed = final.with_name(final.name + ".gz")
    if packed.is_file():
        digests = _gunzip_digest(packed)
        if digests is None or digests[1] != final.stat().st_size or digests[2] != sha256_of(final):
            final.unlink()
            return False
        packed_sha, size, unpacked_sha = digests
        produced = Produced(row.destination, size, unpacked_sha)
        write_record(mirage_data, Record(row.file_id, url, packed.stat().st_size, packed_sha, [produced]))
    else:
        # Nothing to check it against: recorded as found (no download size or SHA-256).
        produced = Produced(row.destination, final.stat().st_size, sha256_of(final))
        write_record(mirage_data, Record(row.file_id, url, 0, "", [produced]))
    return True


def _adopt_tarball(mirage_data: Path, archive: Path, row, url: str) -> bool | None:
    if not archive.is_file():
        return None
    digests = _gunzip_digest(archive)
    if digests is None:
        return False
    produced = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = tarball_member_destination(member.name)
                if name is None or not member.isreg():
                    continue
                target = mirage_data / name
                if not target.is_file() or target.stat().st_size != member.size:
                    return False
                expected = hashlib.file_digest(tar.extractfile(member), "sha256").hexdigest()
                if sha256_of(target) != expected:
                    return False
                produced.append(Produced(name, member.size, expected))
    except (tarfile.TarError, OSError, EOFError):
        return False
    write_record(mirage_data, Record(row.file_id, url, archive.stat().st_size, digests[0], produced))
    return True


def adopt_mirage_tree(
    download_dir: Path, table: pd.DataFrame, base_url: str, remove_archives: bool = False
) -> Adoption:
    """Record what Mirage's downloader left complete in ``download_dir``.

    MIRAGE_DATA is ``download_dir/mirage_data``; rows already recorded are
    skipped. With ``remove_archives``, Mirage's ``.gz`` copies of adopted
    darks and its adopted tarballs are deleted.
    """
    mirage_data = download_dir / "mirage_data"
    result = Adoption()
    for row in table.itertuples():
        # Mirage keeps each dark's .gz beside it and each tarball at the top.
        is_dark = row.archive == "gz"
        copy = mirage_data / (row.destination + ".gz") if is_dark else download_dir / Path(row.path).name
        if copy.is_file():
            result.leftovers.append(copy)
        if record_path(mirage_data, row.file_id).exists():
            continue
        url = base_url + row.path
        if row.archive == "gz":
            outcome = _adopt_dark(mirage_data, row, url)
        else:
            outcome = _adopt_tarball(mirage_data, copy, row, url)
        if outcome is True:
            result.adopted.append(row.file_id)
        elif outcome is False:
            result.rejected.append(row.file_id)
    result.leftover_bytes = sum(path.stat().st_size for path in result.leftovers)
    if remove_archives:
        for path in result.leftovers:
            path.unlink()
    return result
