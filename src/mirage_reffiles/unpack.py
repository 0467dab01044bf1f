"""Unpacking: gunzip while the bytes arrive, and tarballs extracted safely.

Standard library only: the download jobs import this under ``python -S``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import TextIO

from .disk import require_free_space
from .layout import tarball_member_destination
from .records import Produced
from .transfer import FetchError, Progress

GZIP_WBITS = 16 + zlib.MAX_WBITS
#: Most output one call to the decompressor may produce, to bound memory
#: however well the data compresses.
MAX_INFLATE = 8 << 20


class UnpackError(FetchError):
    """The archive is corrupt or unsafe; the message names the problem."""


class GunzipSink:
    """Decompresses gzip bytes as they arrive, into ``path`` (or nowhere: a check only).

    zlib checks each member's CRC-32 and length trailer as it reaches it; a
    stream that stops before its trailer is caught by :meth:`close`.
    """

    def __init__(self, path: Path | None, near: Path | None = None):
        self.path = path or near  # where disk space is needed (the file, or what it checks)
        self._out = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(path, "wb")  # noqa: SIM115 (open for the life of the download)
        self.reset()

    def write(self, chunk: bytes) -> None:
        data = chunk
        try:
            while data:
                if self._inflater.eof:  # a further gzip member follows
                    self._inflater = zlib.decompressobj(GZIP_WBITS)
                out = self._inflater.decompress(data, MAX_INFLATE)
                if self._out is not None:
                    self._out.write(out)
                    self._digest.update(out)
                self.size += len(out)
                data = self._inflater.unconsumed_tail or self._inflater.unused_data
        except zlib.error as error:
            raise UnpackError(f"corrupt gzip data ({error})") from None

    def reset(self) -> None:
        if self._out is not None:
            self._out.seek(0)
            self._out.truncate()
        self._inflater = zlib.decompressobj(GZIP_WBITS)
        self._digest = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        """Finish the file; raise :class:`UnpackError` if the stream was cut short."""
        try:
            if not self._inflater.eof:
                raise UnpackError("truncated gzip data (no end-of-stream trailer)")
            if self._out is not None:
                self._out.flush()
                os.fsync(self._out.fileno())
        finally:
            self.discard(keep=True)

    def discard(self, keep: bool = False) -> None:
        if self._out is not None:
            self._out.close()
            if not keep:
                self.path.unlink(missing_ok=True)


def _member_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo | None:
    """Drop the leading ``mirage_data/`` and refuse anything unsafe.

    Absolute names and ``..`` are refused outright; Python's ``data`` filter
    then refuses links that point outside the destination, devices and fifos.
    """
    for path in (member.name, member.linkname if member.islnk() else ""):
        if path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise UnpackError(f"unsafe member {member.name!r} refused: absolute path or '..' in {path!r}")
    name = tarball_member_destination(member.name)
    if name is None:
        return None
    changes = {"name": name}
    if member.islnk():  # hard links name another member
        changes["linkname"] = tarball_member_destination(member.linkname) or member.linkname
    try:
        return tarfile.data_filter(member.replace(**changes, deep=False), dest_path)
    except tarfile.FilterError as error:
        raise UnpackError(f"unsafe member {member.name!r} refused: {error}") from None


def extract_tarball(archive: Path, staging: Path, log: TextIO | None = None) -> list[Produced]:
    """Extract ``archive`` into the empty folder ``staging``.

    Returns each regular file extracted, relative to ``staging``. Refuses the
    whole archive when any member is unsafe or the members would not fit in
    the free space, and reports a corrupt or truncated archive as
    :class:`UnpackError`.
    """
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:  # check everything before writing anything
                _member_filter(member, str(staging))
            total = sum(m.size for m in members if m.isreg())
            require_free_space(staging, total, f"unpacking {archive.name}")
            progress = Progress(f"unpacking {archive.name}", total, stream=log)
            done = 0
            for member in members:
                tar.extract(member, staging, filter=_member_filter)
                done += member.size if member.isreg() else 0
                progress.update(done)
            progress.finish(done)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise UnpackError(f"corrupt or truncated tarball ({error})") from None
    return [
        Produced(path.relative_to(staging).as_posix(), path.stat().st_size, sha256_of(path))
        for path in sorted(staging.rglob("*"))
        if path.is_file() and not path.is_symlink()
    ]


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def move_into_place(staging: Path, root: Path) -> None:
    """Move every file under ``staging`` to the same relative place under ``root``.

    Each move is a rename within one filesystem, so each file appears whole.
    """
    for path in sorted(staging.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        target = root / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
