"""What a file's first bytes say it is: a response or an unpacked file that is
not what the table says is refused before it can take a final name."""

from __future__ import annotations

from pathlib import Path

#: Every FITS file begins with this card (the FITS standard, section 4.4.1.1).
FITS_MAGIC = b"SIMPLE  ="
#: The first two bytes of every gzip member (RFC 1952).
GZIP_MAGIC = b"\x1f\x8b"


def is_fits(head: bytes) -> bool:
    """Whether ``head``, a file's first bytes, begins a FITS file.

    >>> is_fits(b"SIMPLE  =                    T")
    True
    >>> is_fits(b"<html><body>503 Service Temporarily Unavailable")
    False
    """
    return head.startswith(FITS_MAGIC)


def head_of(path: Path, size: int = 80) -> bytes:
    """The first ``size`` bytes of ``path`` (one FITS card)."""
    with open(path, "rb") as handle:
        return handle.read(size)
