"""Unpacking: gunzip while the bytes arrive, and tarballs extracted safely."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

from . import interrupt
from .content import head_of, magic_for
from .disk import require_free_space
from .errors import FetchError, UnpackError
from .inflate import GzipInflater, ResumePoint, crc32
from .layout import ARCHIVE_DIR, ENV_FILE, STATE_DIR, TARBALL_FOLDERS, tarball_member_destination
from .progress import Progress
from .records import Produced

try:  # ISA-L inflates about twice as fast as zlib here (see docs/benchmarks.md)
    from isal import isal_zlib as inflate_lib
except ImportError:  # pragma: no cover - isal is a dependency; zlib does the same, slower
    inflate_lib = zlib

GZIP_WBITS = 16 + zlib.MAX_WBITS
#: What the inflater raises on corrupt data.
INFLATE_ERRORS = (zlib.error, inflate_lib.error)
#: Most output one call to the decompressor may produce, to bound memory
#: however well the data compresses.
MAX_INFLATE = 8 << 20


class GunzipSink:
    """Decompresses gzip bytes as they arrive, into ``path`` (or nowhere: a check only).

    zlib checks each member's CRC-32 and length trailer as it reaches it; a
    stream that stops before its trailer is caught by :meth:`close`.
    """

    resumable = False  # a later run starts it again from the first byte
    crc32 = None  # its digest is the SHA-256 (``hash_output``)

    def __init__(self, path: Path | None, near: Path | None = None, hash_output: bool | None = None):
        self.path = path or near  # where disk space is needed (the file, or what it checks)
        # The SHA-256 of what comes out: by default only when it is kept in a file.
        self._hash_output = path is not None if hash_output is None else hash_output
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
                    self._inflater = inflate_lib.decompressobj(GZIP_WBITS)
                out = self._inflater.decompress(data, MAX_INFLATE)
                if self._out is not None:
                    self._out.write(out)
                if self._hash_output:
                    self._digest.update(out)
                self.size += len(out)
                data = self._inflater.unconsumed_tail or self._inflater.unused_data
        except INFLATE_ERRORS as error:
            raise UnpackError(f"corrupt gzip data ({error})") from None

    def reset(self) -> None:
        if self._out is not None:
            self._out.seek(0)
            self._out.truncate()
        self._inflater = inflate_lib.decompressobj(GZIP_WBITS)
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
        finally:
            self.discard(keep=True)

    def discard(self, keep: bool = False) -> None:
        if self._out is not None:
            self._out.close()
            if not keep:
                self.path.unlink(missing_ok=True)


class ResumableGunzipSink:
    """Like :class:`GunzipSink` into a file, but its work can be saved and resumed.

    It hands out resume points (see :mod:`.inflate`); :meth:`resume` starts
    again from one, keeping the unpacked bytes before it once they are
    checked against the point's CRC-32.
    """

    resumable = True
    sha256 = None  # its digest is the CRC-32 gunzipping computes anyway: SHA-256 would cost a core per 1.2 GB/s

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(path, "a+b")  # noqa: SIM115 (open for the life of the download)
        self._inflater = GzipInflater(self._out.write)
        self._pointed = False  # whether a resume point relies on this file

    @property
    def size(self) -> int:
        return self._inflater.output_offset

    @property
    def crc32(self) -> int:
        return self._inflater.output_crc

    def write(self, chunk: bytes) -> None:
        self._inflater.feed(chunk)

    def reset(self) -> None:
        # A new file rather than truncate(0): ext4 flushes a file truncated to
        # zero when it is closed (auto_da_alloc), which stalled every download's end.
        self._out.close()
        self.path.unlink(missing_ok=True)
        self._out = open(self.path, "a+b")  # noqa: SIM115
        self._inflater.close()
        self._inflater = GzipInflater(self._out.write)
        self._pointed = False

    def want_point(self) -> None:
        self._inflater.want_point()

    def take_point(self) -> dict | None:
        point = self._inflater.take_point()
        if point is None:
            return None
        self._out.flush()  # the bytes before the point are in the file before the point is saved
        self._pointed = True
        return point.to_dict()

    def resume(self, state: dict) -> None:
        """Go on from a resume point; :class:`UnpackError` if the bytes unpacked before it are not there."""
        point = ResumePoint.from_dict(state)
        self._out.flush()
        self._out.seek(0)
        crc, read = _crc32_read(self._out, point.output_offset)
        if read != point.output_offset or crc != point.output_crc:
            raise UnpackError(f"{self.path.name} does not hold the bytes its resume point describes")
        self._out.truncate(point.output_offset)
        self._inflater.close()
        self._inflater = GzipInflater.resume(point, self._out.write)
        self._pointed = True

    def close(self) -> None:
        """Finish the file; raise :class:`UnpackError` if the stream was cut short."""
        if not self._inflater.at_end:
            self.discard()
            raise UnpackError("truncated gzip data (no end-of-stream trailer)")
        self._inflater.close()
        self._out.close()

    def discard(self, keep: bool = False) -> None:
        """Close the file; delete it unless asked to ``keep`` it and a resume point needs it."""
        self._inflater.close()
        with contextlib.suppress(OSError):  # a full disk: what is lost comes after the last resume point
            self._out.close()
        if not (keep and self._pointed):
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Lane:
    """Where a tarball may create files under MIRAGE_DATA: inside ``folder`` (anywhere when None)
    but not inside the ``nested`` lanes of other kinds, never a ``reserved`` file (another row's,
    such as a dark) nor the build's own bookkeeping, environment file or kept archives."""

    folder: PurePosixPath | None = None
    kind: str = ""
    nested: tuple[PurePosixPath, ...] = ()
    reserved: frozenset[str] = frozenset()

    @classmethod
    def of(cls, kind: str, instrument: str, reserved: frozenset[str] = frozenset()) -> Lane:
        """The lane of a tarball of ``kind`` for ``instrument`` (see :data:`.layout.TARBALL_FOLDERS`);
        a blank ``kind`` (not known) keeps only the ``reserved`` files and the build's own safe."""
        if not kind:
            return cls(reserved=reserved)
        if kind not in TARBALL_FOLDERS:
            raise FetchError(f"no folder is declared for tarballs of kind {kind!r}; add it to layout.TARBALL_FOLDERS")
        folders = {name: PurePosixPath(f.format(instrument=instrument)) for name, f in TARBALL_FOLDERS.items()}
        folder = folders.pop(kind)
        nested = tuple(other for other in folders.values() if other != folder and other.is_relative_to(folder))
        return cls(folder, kind, nested, reserved)

    def refusal(self, destination: str, is_dir: bool) -> str | None:
        """Why a member may not be created at ``destination`` (under MIRAGE_DATA); None when it may."""
        path = PurePosixPath(destination)
        if path.parts[0] in (STATE_DIR, ARCHIVE_DIR) or destination == ENV_FILE:
            return f"{destination!r} belongs to the build itself"
        if destination in self.reserved:
            return f"{destination!r} is another row's file"
        if self.folder is None:
            return None
        if is_dir and self.folder.is_relative_to(path):
            return None  # a parent of the lane: creates no file
        lane = f"a {self.kind} tarball may only create files under {self.folder.as_posix()}/"
        if not path.is_relative_to(self.folder):
            return f"{destination!r} is outside its lane: {lane}"
        inner = next((other for other in self.nested if path.is_relative_to(other)), None)
        if inner is not None and not is_dir:
            return f"{destination!r} is inside {inner.as_posix()}/, another kind's folder: {lane}"
        return None


def _member_filter(member: tarfile.TarInfo, dest_path: str, lane: Lane) -> tarfile.TarInfo | None:
    """Drop the leading ``mirage_data/`` and refuse anything unsafe or outside ``lane``.

    Absolute names and ``..`` are refused outright; Python's ``data`` filter
    then refuses links that point outside the destination, devices and fifos.
    """
    for path in (member.name, member.linkname if member.islnk() else ""):
        if path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise UnpackError(f"unsafe member {member.name!r} refused: absolute path or '..' in {path!r}")
    name = tarball_member_destination(member.name)
    if name is None:
        return None
    if problem := lane.refusal(name, member.isdir()):
        raise UnpackError(f"member {member.name!r} refused: {problem}")
    changes = {"name": name}
    if member.islnk():  # hard links name another member
        changes["linkname"] = tarball_member_destination(member.linkname) or member.linkname
        if not os.path.lexists(os.path.join(dest_path, changes["linkname"])):
            raise UnpackError(f"hard link {member.name!r} refused: it names {member.linkname!r}, no earlier member")
    try:
        return tarfile.data_filter(member.replace(**changes, deep=False), dest_path)
    except tarfile.FilterError as error:
        raise UnpackError(f"unsafe member {member.name!r} refused: {error}") from None


def _check_kind(member: tarfile.TarInfo, path: Path) -> None:
    """Refuse a member that is not the kind of file its name says (an error page saved as ``.fits``)."""
    magic = magic_for(member.name)
    if magic is not None and not (head := head_of(path, len(magic))).startswith(magic):
        raise UnpackError(f"member {member.name!r} refused: it should begin with {magic!r}, it begins with {head!r}")


def extract_tarball(
    archive: Path, staging: Path, log: TextIO | None = None, size: int | None = None, lane: Lane | None = None
) -> list[Produced]:
    """Extract ``archive`` into the empty folder ``staging``, in one pass over its bytes.

    ``size``, the tar stream's unpacked size when known, must fit in the free
    space first. Returns each regular file extracted, relative to
    ``staging``. An unsafe member, one outside ``lane`` or one that is not
    what its name says refuses the whole archive (the caller drops
    ``staging``); a corrupt or truncated archive is an :class:`UnpackError`.
    """
    lane = lane or Lane()
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    if size:
        require_free_space(staging, size, f"unpacking {archive.name}")
    progress = Progress(f"unpacking {archive.name}", size, stream=log, on_board=False)
    done = 0
    try:
        with gzip_reader(archive) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                interrupt.check(f"unpacking {archive.name}")  # the complete download stays for the next run
                tar.extract(member, staging, filter=functools.partial(_member_filter, lane=lane))
                if member.isreg() and (name := tarball_member_destination(member.name)) is not None:
                    _check_kind(member, staging / name)
                done += member.size if member.isreg() else 0
                progress.update(done)
    except (tarfile.TarError, EOFError, *INFLATE_ERRORS) as error:
        raise UnpackError(f"corrupt or truncated tarball ({error})") from None
    progress.finish(done)
    return [
        Produced(path.relative_to(staging).as_posix(), path.stat().st_size, sha256_of(path))
        for path in sorted(staging.rglob("*"))
        if path.is_file() and not path.is_symlink()
    ]


def gzip_reader(path: Path):
    """A reader of the decompressed bytes of ``path``, with the faster inflater when there is one."""
    if inflate_lib is zlib:
        return gzip.open(path, "rb")
    from isal import igzip

    return igzip.open(path, "rb")


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _crc32_read(handle, limit: int | None = None) -> tuple[int, int]:
    """CRC-32 of what ``handle`` reads, up to ``limit`` bytes (all, by default), and how many it read."""
    crc = read = 0
    while limit is None or read < limit:
        block = handle.read(MAX_INFLATE if limit is None else min(MAX_INFLATE, limit - read))
        if not block:
            break
        crc = crc32(block, crc)
        read += len(block)
    return crc, read


def crc32_of(path: Path) -> int:
    with open(path, "rb") as handle:
        return _crc32_read(handle)[0]


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
