"""Gunzip that can be stopped, saved and resumed mid-stream, without the compressed bytes.

Python's ``zlib`` module cannot save an inflater. zlib itself can stop at
the end of each deflate block (``Z_BLOCK``), hand out its 32 KiB window
(``inflateGetDictionary``) and start again from any bit of the stream
(``inflatePrime``, ``inflateSetDictionary``): the method of zlib's own
``examples/zran.c``. With a :class:`ResumePoint` taken now and then, a
download that stops can go on from the last point with only the compressed
bytes received since it, so those are all that has to be kept on disk.

The library is driven through ctypes: zlib-ng's own API from the library
the ``zlib-ng`` package carries (its inflate is about 1.3x zlib's here),
else the system zlib (a stable ABI; with a 4 MiB output buffer it still
beats the ``zlib`` module). SHA-256 state is saved the same way, through
OpenSSL's ``SHA256_CTX``. Where neither zlib nor OpenSSL can be loaded,
:func:`available` is False and the callers keep every compressed byte.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import importlib.util
from collections.abc import Callable
from dataclasses import asdict, dataclass

from mirage_reffiles.errors import UnpackError
from mirage_reffiles.unpack.hashing import can_save_sha256, crc32
from mirage_reffiles.unpack.native import address, load

Z_OK, Z_STREAM_END, Z_NEED_DICT, Z_BUF_ERROR = 0, 1, 2, -5
Z_NO_FLUSH, Z_BLOCK = 0, 5
OUTPUT_BUFFER = 4 << 20
WINDOW = 32 << 10
GZIP_MAGIC = b"\x1f\x8b"
#: The one compression method of gzip (RFC 1952): deflate.
GZIP_DEFLATE = 8
#: Bits of a gzip header's flag byte (RFC 1952, 2.3.1).
FHCRC, FEXTRA, FNAME, FCOMMENT = 2, 4, 8, 16
#: What inflate() says in ``data_type`` when it stops with Z_BLOCK (zlib.h; zran.c's tests):
#: at the end of a deflate block, at the end of the last block, and how many bits of the
#: last byte it used are left over.
AT_BLOCK_END, AT_LAST_BLOCK, UNUSED_BITS = 128, 64, 7


class _ZStream(ctypes.Structure):  # zlib.h's z_stream
    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


def _zlib_ng_paths() -> list[str]:
    """Where zlib-ng may be: inside the ``zlib-ng`` package's module (PyPI wheels link it
    statically and export its API), or a shared ``libz-ng`` (conda-forge, some distributions)."""
    paths = []
    try:
        spec = importlib.util.find_spec("zlib_ng.zlib_ng")
    except ImportError:
        spec = None
    if spec and spec.origin:
        paths.append(spec.origin)
    if shared := ctypes.util.find_library("z-ng"):
        paths.append(shared)
    return paths


_STREAM = ctypes.POINTER(_ZStream)
_INFLATE = {
    "inflate": [_STREAM, ctypes.c_int],
    "inflateEnd": [_STREAM],
    "inflatePrime": [_STREAM, ctypes.c_int, ctypes.c_int],
    "inflateSetDictionary": [_STREAM, ctypes.c_void_p, ctypes.c_uint],
    "inflateGetDictionary": [_STREAM, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint)],
    "crc32_combine": [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_int64],
}


def open_zlib(zlib_ng: bool = True) -> tuple[ctypes.CDLL | None, str]:
    """The inflating library and its names' prefix: zlib-ng's own API (``zng_``
    names; same stream layout on 64-bit Linux for the fields used here) when
    ``zlib_ng`` and it is there, else the system zlib; ``(None, "")`` if neither."""
    library = None
    for path in _zlib_ng_paths() if zlib_ng else []:
        if library := load(path, "zng_", {**_INFLATE, "inflateInit2": [_STREAM, ctypes.c_int]}):
            break
    if library is not None:
        prefix = "zng_"
    else:
        prefix, library = (
            "",
            load(
                ctypes.util.find_library("z"),
                "",
                {
                    **_INFLATE,
                    "inflateInit2_": [_STREAM, ctypes.c_int, ctypes.c_char_p, ctypes.c_int],
                    "zlibVersion": [],
                },
            ),
        )
        if library is None:
            return None, ""
        library.zlibVersion.restype = ctypes.c_char_p
    getattr(library, prefix + "crc32_combine").restype = ctypes.c_uint32
    return library, prefix


_zlib, _PREFIX = open_zlib()


def _z(name: str):
    """The zlib function ``name``, from whichever library was loaded."""
    return getattr(_zlib, _PREFIX + name)


def _inflate_init(stream: _ZStream) -> int:
    if _PREFIX:
        return _z("inflateInit2")(stream, -15)
    return _zlib.inflateInit2_(stream, -15, _zlib.zlibVersion(), ctypes.sizeof(_ZStream))


def crc32_combine(first: int, second: int, second_length: int) -> int:
    """The CRC-32 of two pieces from theirs."""
    return _z("crc32_combine")(first, second, second_length)


def available() -> bool:
    """True when gunzipping can be saved and resumed here (zlib and OpenSSL loaded)."""
    return _zlib is not None and can_save_sha256()


@dataclass
class ResumePoint:
    """Where gunzipping can start again: at a deflate block boundary.

    The next block starts ``bits`` bits before ``input_offset`` (in the
    high bits of ``byte``), with ``window`` as the last 32 KiB of output.
    """

    input_offset: int  # compressed bytes before the point (whole stream)
    bits: int
    byte: int
    window: str  # base64
    output_offset: int  # unpacked bytes before the point (whole stream)
    before_crc: int  # CRC-32 of the output of the members before this one
    member_crc: int  # CRC-32 and size of this gzip member's output so far
    member_size: int

    @property
    def output_crc(self) -> int:
        """CRC-32 of all the output before the point."""
        return crc32_combine(self.before_crc, self.member_crc, self.member_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ResumePoint:
        return cls(**data)


def _gzip_header_length(data: bytes) -> int | None:
    """Length of the gzip member header at the start of ``data``; None if incomplete."""
    if len(data) < 10:
        return None
    if data[:2] != GZIP_MAGIC or data[2] != GZIP_DEFLATE:
        raise UnpackError("not gzip data (bad magic number or method)")
    flags, position = data[3], 10
    if flags & FEXTRA:
        if len(data) < position + 2:
            return None
        position += 2 + int.from_bytes(data[position : position + 2], "little")
    for flag in (FNAME, FCOMMENT):  # zero-terminated
        if flags & flag:
            end = data.find(b"\0", position)
            if end < 0:
                return None
            position = end + 1
    if flags & FHCRC:
        position += 2
    return position if len(data) >= position else None


class GzipInflater:
    """Gunzips a stream fed in pieces, handing the output to ``write``.

    Checks each member's CRC-32 and length; takes a :class:`ResumePoint` at
    the next block boundary after :meth:`want_point`.
    """

    def __init__(self, write: Callable[[memoryview], None]):
        if _zlib is None:
            raise RuntimeError("neither zlib-ng nor the system zlib could be loaded")
        self._write = write
        self._out = ctypes.create_string_buffer(OUTPUT_BUFFER)
        self._view = memoryview(self._out).cast("B")
        self._stream: _ZStream | None = None
        self._pending = b""  # header or trailer bytes not yet complete
        self._in_member = False  # between a header and its trailer
        self._want = False
        self._point: ResumePoint | None = None
        self._last_byte = 0  # the last compressed byte taken: a block may begin inside it
        self.members = 0
        self.input_offset = 0
        self.output_offset = 0
        self.before_crc = 0  # CRC-32 of the output of the members before the current one
        self.member_crc = 0
        self.member_size = 0

    @classmethod
    def resume(cls, point: ResumePoint, write: Callable[[memoryview], None]) -> GzipInflater:
        inflater = cls(write)
        inflater._start_raw()
        if point.bits:
            _z("inflatePrime")(inflater._stream, point.bits, point.byte >> (8 - point.bits))
        window = base64.b64decode(point.window)
        _z("inflateSetDictionary")(inflater._stream, address(window), len(window))
        inflater._in_member = True
        inflater._last_byte = point.byte
        inflater.members = 1
        for name in ("input_offset", "output_offset", "before_crc", "member_crc", "member_size"):
            setattr(inflater, name, getattr(point, name))
        return inflater

    @property
    def at_end(self) -> bool:
        """True after a complete member (its trailer checked), with nothing more begun."""
        return self.members > 0 and not self._in_member and self._stream is None and not self._pending

    @property
    def output_crc(self) -> int:
        """CRC-32 of all the output so far."""
        if not self._in_member:
            return self.before_crc  # which includes the member just ended
        return crc32_combine(self.before_crc, self.member_crc, self.member_size)

    def want_point(self) -> None:
        self._want = True

    def take_point(self) -> ResumePoint | None:
        point, self._point = self._point, None
        return point

    def feed(self, data: bytes) -> None:
        while data:
            used = self._inflate(data) if self._in_member else self._read_framing(data)
            self.input_offset += used
            data = data[used:]

    def close(self) -> None:
        if self._stream is not None:
            _z("inflateEnd")(self._stream)
            self._stream = None

    def _start_raw(self) -> None:
        self.close()
        self._stream = _ZStream()
        if _inflate_init(self._stream) != Z_OK:
            raise RuntimeError("zlib inflateInit2 failed")

    def _read_framing(self, data: bytes) -> int:
        """Take bytes of a member's header (or trailer, after its deflate data); returns how many."""
        if self.members and self._stream is not None:  # the trailer of the member that just ended
            need = 8 - len(self._pending)
            self._pending += data[:need]
            if len(self._pending) == 8:
                crc, size = int.from_bytes(self._pending[:4], "little"), int.from_bytes(self._pending[4:], "little")
                if crc != self.member_crc or size != self.member_size & 0xFFFFFFFF:
                    raise UnpackError("corrupt gzip data (CRC-32 or length check failed)")
                self._pending = b""
                self.close()
            return min(need, len(data))
        before = len(self._pending)
        self._pending += data[: 64 << 10]
        length = _gzip_header_length(self._pending)
        if length is None:
            if len(self._pending) >= 64 << 10:
                raise UnpackError("gzip header too long")
            return len(self._pending) - before
        self._pending = b""
        self._start_raw()
        self._in_member = True
        self.members += 1
        self.member_crc = self.member_size = 0
        return length - before

    def _inflate(self, data: bytes) -> int:
        stream, size = self._stream, len(data)
        stream.next_in, stream.avail_in = address(data), size
        while True:
            stream.next_out, stream.avail_out = ctypes.addressof(self._out), OUTPUT_BUFFER
            status = _z("inflate")(stream, Z_BLOCK if self._want else Z_NO_FLUSH)
            produced = OUTPUT_BUFFER - stream.avail_out
            if produced:
                chunk = self._view[:produced]
                self.member_crc = crc32(chunk, self.member_crc)
                self.member_size += produced
                self.output_offset += produced
                self._write(chunk)
            used = size - stream.avail_in
            if used:
                self._last_byte = data[used - 1]
            if status == Z_STREAM_END:
                self._in_member = False
                self.before_crc = crc32_combine(self.before_crc, self.member_crc, self.member_size)
                return used
            if status not in (Z_OK, Z_BUF_ERROR):
                message = stream.msg.decode(errors="replace") if stream.msg else f"zlib status {status}"
                raise UnpackError(f"corrupt gzip data ({message})")
            at_boundary = stream.data_type & AT_BLOCK_END and not stream.data_type & AT_LAST_BLOCK
            if self._want and at_boundary:
                self._mark(used, stream.data_type & UNUSED_BITS)
            if stream.avail_in == 0 and stream.avail_out:
                return used

    def _mark(self, used: int, bits: int) -> None:
        window = ctypes.create_string_buffer(WINDOW)
        length = ctypes.c_uint(0)
        _z("inflateGetDictionary")(self._stream, window, ctypes.byref(length))
        self._want = False
        self._point = ResumePoint(
            input_offset=self.input_offset + used,
            bits=bits,
            byte=self._last_byte if bits else 0,
            window=base64.b64encode(window.raw[: length.value]).decode(),
            output_offset=self.output_offset,
            before_crc=self.before_crc,
            member_crc=self.member_crc,
            member_size=self.member_size,
        )
