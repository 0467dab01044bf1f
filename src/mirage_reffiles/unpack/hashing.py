"""Digests: SHA-256 whose state can be saved (for resume points), CRC-32, and files' digests.

SHA-256 runs in OpenSSL's ``SHA256_CTX`` through ctypes, so its state can be
written down with a resume point and restored; without libcrypto a plain
``hashlib`` hasher is used (and no points are taken).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import hashlib
import zlib
from pathlib import Path

from mirage_reffiles.transfer import interrupt
from mirage_reffiles.unpack.native import address, load

try:  # ISA-L's CRC-32 is the fastest here; both release the GIL on large buffers
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a dependency
    crc32 = zlib.crc32

#: Bytes read at a time when a file's digest is computed.
READ_BLOCK = 8 << 20


class _Sha256Ctx(ctypes.Structure):  # OpenSSL's SHA256_CTX
    _fields_ = [
        ("h", ctypes.c_uint * 8),
        ("Nl", ctypes.c_uint),
        ("Nh", ctypes.c_uint),
        ("data", ctypes.c_uint * 16),
        ("num", ctypes.c_uint),
        ("md_len", ctypes.c_uint),
    ]


_CTX = ctypes.POINTER(_Sha256Ctx)
_crypto = load(
    ctypes.util.find_library("crypto"),
    "",
    {
        "SHA256_Init": [_CTX],
        "SHA256_Update": [_CTX, ctypes.c_void_p, ctypes.c_size_t],
        "SHA256_Final": [ctypes.c_char_p, _CTX],
    },
)


def can_save_sha256() -> bool:
    """True when SHA-256 state can be saved here (OpenSSL's libcrypto loaded)."""
    return _crypto is not None


class Sha256:
    """SHA-256 whose state can be saved (:meth:`state`) and restored (:meth:`restore`)."""

    def __init__(self) -> None:
        self._ctx = _Sha256Ctx()
        _crypto.SHA256_Init(ctypes.byref(self._ctx))

    def update(self, data: bytes) -> None:
        data = data if isinstance(data, bytes) else bytes(data)
        _crypto.SHA256_Update(ctypes.byref(self._ctx), address(data), len(data))

    def hexdigest(self) -> str:
        copy = _Sha256Ctx.from_buffer_copy(self._ctx)  # finishing spoils the context
        digest = ctypes.create_string_buffer(32)
        _crypto.SHA256_Final(digest, ctypes.byref(copy))
        return digest.raw.hex()

    def state(self) -> str:
        return base64.b64encode(bytes(self._ctx)).decode()

    @classmethod
    def restore(cls, state: str) -> Sha256:
        sha = cls()
        sha._ctx = _Sha256Ctx.from_buffer_copy(base64.b64decode(state))
        return sha


def new_sha256() -> Sha256 | hashlib._Hash:
    """A SHA-256 hasher, one that can be saved when this platform allows."""
    return Sha256() if _crypto is not None else hashlib.sha256()


def _digest_of(path: Path, digest):
    """``digest`` updated with every byte of ``path``; a stop asked for ends it between blocks."""
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):
            interrupt.check(f"hashing {Path(path).name}")
            digest.update(block)
    return digest


def sha256_of(path: Path) -> str:
    return _digest_of(path, hashlib.sha256()).hexdigest()


def sha1_of(path: Path) -> str:
    """What a CRDS server pins a file by."""
    return _digest_of(path, hashlib.sha1()).hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The git blob SHA-1 of a file: ``sha1(b"blob <size>\\0" + bytes)``, what git names its contents by.

    It pins the size as well as the bytes.
    """
    return _digest_of(path, hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)).hexdigest()


def crc32_read(handle, limit: int | None = None) -> tuple[int, int]:
    """CRC-32 of what ``handle`` reads, up to ``limit`` bytes (all, by default), and how many it read."""
    crc = read = 0
    while limit is None or read < limit:
        block = handle.read(READ_BLOCK if limit is None else min(READ_BLOCK, limit - read))
        if not block:
            break
        interrupt.check("reading back what was unpacked")
        crc = crc32(block, crc)
        read += len(block)
    return crc, read


def crc32_of(path: Path) -> int:
    with open(path, "rb") as handle:
        return crc32_read(handle)[0]
