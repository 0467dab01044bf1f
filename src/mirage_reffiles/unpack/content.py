"""What a file's first bytes say it is: a response or an unpacked file that is
not what the table says is refused before it can take a final name."""

from __future__ import annotations

from pathlib import Path

#: Every FITS file begins with this card (the FITS standard, section 4.4.1.1).
FITS_MAGIC = b"SIMPLE  ="
#: The first two bytes of every gzip member (RFC 1952).
GZIP_MAGIC = b"\x1f\x8b"
#: The first line of every ASDF file (the ASDF standard, section 3.1).
ASDF_MAGIC = b"#ASDF"
#: The HDF5 format signature, looked for at offset 0 (a file with a user block before it would be refused).
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: What a file of each kind begins with, by its name's extension; other extensions are not checked.
MAGIC_BY_EXTENSION = {".fits": FITS_MAGIC, ".asdf": ASDF_MAGIC, ".h5": HDF5_MAGIC, ".hdf5": HDF5_MAGIC}


def is_fits(head: bytes) -> bool:
    """Whether ``head``, a file's first bytes, begins a FITS file.

    >>> is_fits(b"SIMPLE  =                    T")
    True
    >>> is_fits(b"<html><body>503 Service Temporarily Unavailable")
    False
    """
    return head.startswith(FITS_MAGIC)


def magic_for(name: str) -> bytes | None:
    """What a file called ``name`` must begin with; None when its extension is not checked.

    >>> magic_for("nircam/gridded_psf_library/a.FITS")
    b'SIMPLE  ='
    >>> magic_for("readme.txt") is None
    True
    """
    return MAGIC_BY_EXTENSION.get(Path(name).suffix.lower())


def head_of(path: Path, size: int = 80) -> bytes:
    """The first ``size`` bytes of ``path`` (one FITS card)."""
    with open(path, "rb") as handle:
        return handle.read(size)
