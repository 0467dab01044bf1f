"""C libraries loaded through ctypes: zlib (or zlib-ng) for inflate, OpenSSL's libcrypto for SHA-256."""

from __future__ import annotations

import ctypes


def load(path: str | None, prefix: str, functions: dict[str, list]) -> ctypes.CDLL | None:
    """The library at ``path`` with ``functions`` (names without ``prefix``) typed; None if any is missing."""
    try:
        library = ctypes.CDLL(path) if path else None
        for function, argtypes in functions.items():
            getattr(library, prefix + function).argtypes = argtypes
    except (OSError, AttributeError):
        return None
    return library


def address(data: bytes) -> int:
    """Where the bytes of ``data`` are (no copy); ``data`` must outlive its use."""
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
