"""Gunzip while the bytes arrive: into a file, or only to check the stream (tarballs)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import zlib
from collections.abc import Callable
from pathlib import Path

from mirage_reffiles.errors import UnpackError
from mirage_reffiles.tree.door import open_file
from mirage_reffiles.unpack.hashing import crc32_read
from mirage_reffiles.unpack.inflate import GzipInflater, ResumePoint

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
    ``check(n)`` is told the unpacked count before each piece is written,
    and raises to stop there (see :meth:`.Bounds.check_unpacked`).
    """

    resumable = False  # a later run starts it again from the first byte
    crc32 = None  # its digest is the SHA-256 (``hash_output``)

    def __init__(
        self,
        path: Path | None,
        near: Path | None = None,
        hash_output: bool | None = None,
        check: Callable[[int], None] | None = None,
    ):
        self.path = path or near  # where disk space is needed (the file, or what it checks)
        self._check = check or _unbounded
        # The SHA-256 of what comes out: by default only when it is kept in a file.
        self._hash_output = path is not None if hash_output is None else hash_output
        self._out = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open_file(path, "wb")  # open for the life of the download; never through a link
        self.reset()

    def write(self, chunk: bytes) -> None:
        data = chunk
        try:
            while data:
                if self._inflater.eof:  # a further gzip member follows
                    self._inflater = inflate_lib.decompressobj(GZIP_WBITS)
                out = self._inflater.decompress(data, MAX_INFLATE)
                self._check(self.size + len(out))
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


def _unbounded(count: int) -> None:
    pass


class ArchiveSink:
    """Takes the bytes of an archive unpacked once it is complete (a tarball): the partial download keeps
    them, and unpacking checks the gzip stream to its trailer, so nothing is done as they arrive."""

    resumable = False

    def __init__(self, near: Path):
        self.path = near  # where disk space is needed

    def write(self, chunk: bytes) -> None:
        pass

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass

    def discard(self, keep: bool = False) -> None:
        pass


def unpacked_size_hint(path: Path) -> int:
    """At least how many bytes gzip file ``path`` unpacks to: its trailer's length (modulo 2**32),
    raised by multiples of 2**32 to no less than the compressed size."""
    size = path.stat().st_size
    if size < 18:
        return 0
    with open(path, "rb") as handle:
        handle.seek(-4, 2)
        hint = int.from_bytes(handle.read(4), "little")
    while hint < size:
        hint += 1 << 32
    return hint


class ResumableGunzipSink:
    """Like :class:`GunzipSink` into a file, but its work can be saved and resumed.

    It hands out resume points (see :mod:`.inflate`); :meth:`resume` starts
    again from one, keeping the unpacked bytes before it once they are
    checked against the point's CRC-32. ``check`` bounds what it unpacks,
    as for :class:`GunzipSink`.
    """

    resumable = True
    sha256 = None  # its digest is the CRC-32 gunzipping computes anyway: SHA-256 would cost a core per 1.2 GB/s

    def __init__(self, path: Path, check: Callable[[int], None] | None = None):
        self.path = path
        self._check = check or _unbounded
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out = open_file(path, "a+b")  # open for the life of the download; never through a link
        self._inflater = GzipInflater(self._take)
        self._pointed = False  # whether a resume point relies on this file

    @property
    def size(self) -> int:
        return self._inflater.output_offset

    @property
    def crc32(self) -> int:
        return self._inflater.output_crc

    def write(self, chunk: bytes) -> None:
        self._inflater.feed(chunk)

    def _take(self, unpacked: memoryview) -> None:
        self._check(self._inflater.output_offset)  # which counts these bytes already
        self._out.write(unpacked)

    def reset(self) -> None:
        # A new file rather than truncate(0): ext4 flushes a file truncated to
        # zero when it is closed (auto_da_alloc), which stalled every download's end.
        self._out.close()
        self.path.unlink(missing_ok=True)
        self._out = open_file(self.path, "a+b")
        self._inflater.close()
        self._inflater = GzipInflater(self._take)
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
        crc, read = crc32_read(self._out, point.output_offset)
        if read != point.output_offset or crc != point.output_crc:
            raise UnpackError(f"{self.path.name} does not hold the bytes its resume point describes")
        self._out.truncate(point.output_offset)
        self._inflater.close()
        self._inflater = GzipInflater.resume(point, self._take)
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


def gzip_reader(path: Path):
    """A reader of the decompressed bytes of ``path``, with the faster inflater when there is one."""
    if inflate_lib is zlib:
        return gzip.open(path, "rb")
    from isal import igzip

    return igzip.open(path, "rb")
