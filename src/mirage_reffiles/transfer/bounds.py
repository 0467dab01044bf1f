"""What bytes may be accepted: every count of bytes has a bound, from the table or the server.

A download is counted in three places: the download loop (compressed bytes),
the gunzip sink (the unpacked file) and tar extraction (each member, from
its header, before it is extracted; and the tar stream). Each asks one
:class:`Bounds`, which knows what the table says of the row and what the
server announced, and raises :class:`.VerifyError` naming the check as soon
as a count passes its bound:

- a size the table pins (``*_exact``) bounds exactly, and must be met;
- an estimate bounds at :data:`MARGIN` times itself plus :data:`FLOOR`;
- the server's Content-Length bounds the download once announced (and must
  not pass the table's bound); with no unpacked size in the table, unpacking
  is bounded at :data:`INFLATION` times the compressed size, plus :data:`FLOOR`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mirage_reffiles.errors import VerifyError

#: An estimate bounds a count at this many times itself, plus FLOOR: Mirage's size table is a rough share.
MARGIN = 4
#: Added to every bound drawn from an estimate, so a tiny or blank estimate does not refuse a real file.
FLOOR = 16 << 20
#: With no unpacked size in the table, the most bytes one compressed byte may unpack to (reference
#: files compress a few times at best; a gzip bomb about a thousand).
INFLATION = 64

MIB = f"{FLOOR >> 20} MiB"


@dataclass
class Expected:
    """What the table knows of a file: checked before it takes its final name.

    ``size`` is the download's size, exact unless ``size_exact`` is False (an
    estimate); ``unpacked`` the bytes it unpacks to (the dark, or all tarball
    members), likewise.
    """

    size: int | None = None
    sha256: str | None = None
    size_exact: bool = True
    unpacked: int | None = None
    unpacked_exact: bool = False

    @classmethod
    def of_row(cls, row) -> Expected:
        """From a row of the reference table (every column text; blank: unknown)."""
        return cls(
            size=int(row.size_bytes) if row.size_bytes else None,
            sha256=row.sha256 or None,
            size_exact=row.size_exact == "true",
            unpacked=int(row.unpacked_bytes) if row.unpacked_bytes else None,
            unpacked_exact=row.unpacked_exact == "true",
        )

    @property
    def exact_size(self) -> int | None:
        """The download's size when the table pins it."""
        return self.size if self.size_exact else None


@dataclass(frozen=True)
class Limit:
    """At most ``most`` bytes (None: unbounded), ``exact`` when the count must end at ``most``; ``why`` says whence."""

    most: int | None = None
    exact: bool = False
    why: str = "nothing bounds it"


def _limit(figure: int | None, exact: bool) -> Limit:
    """The bound a figure of the table sets: itself when exact, else with the margin."""
    if figure is None:
        return Limit()
    if exact:
        return Limit(figure, True, f"the table pins {figure:,}")
    return Limit(MARGIN * figure + FLOOR, False, f"the bound of {MARGIN} x the table's estimate ({figure:,}) + {MIB}")


class Bounds:
    """The bounds of one download, shared by everything that counts its bytes (see the module's text)."""

    def __init__(self, expected: Expected | None = None):
        self.expected = expected or Expected()
        self.announced: int | None = None  # the server's length of the whole download

    @property
    def compressed(self) -> Limit:
        expected = self.expected
        table = _limit(expected.size, expected.size_exact)
        if self.announced is not None and (table.most is None or self.announced < table.most):
            return Limit(self.announced, True, f"the server announced {self.announced:,}")
        return table

    @property
    def unpacked(self) -> Limit:
        expected = self.expected
        if expected.unpacked is not None:
            return _limit(expected.unpacked, expected.unpacked_exact)
        compressed = expected.size if expected.size is not None else self.announced
        if compressed is None:
            return Limit()
        source = "the table's" if expected.size is not None else "the server's"
        why = f"the bound of {INFLATION} x {source} compressed size ({compressed:,}) + {MIB}, with no unpacked size"
        return Limit(INFLATION * compressed + FLOOR, False, why)

    def announce(self, length: int | None) -> None:
        """The server says the whole download has ``length`` bytes: refused at once if that passes the bound."""
        if length is None:
            return
        limit = self.compressed
        announces = f"size check failed: the server announces {length:,} bytes"
        if limit.exact and length != limit.most:
            raise VerifyError(f"{announces}, {limit.why}")
        if limit.most is not None and length > limit.most:
            raise VerifyError(f"{announces}, past {limit.most:,}, {limit.why}")
        self.announced = length

    def check_compressed(self, count: int) -> None:
        """``count`` bytes have arrived so far: refused once past the bound."""
        limit = self.compressed
        if limit.most is not None and count > limit.most:
            raise VerifyError(f"size check failed: the download passes {limit.most:,} bytes, {limit.why}")

    def check_unpacked(self, count: int, what: str = "it") -> None:
        """``count`` bytes unpacked so far (before they are written; ``what`` brings them): refused once past
        the bound."""
        limit = self.unpacked
        if limit.most is not None and count > limit.most:
            raise VerifyError(f"unpacked size check failed: {what} unpacks past {limit.most:,} bytes, {limit.why}")

    def check_tar_stream(self, count: int) -> None:
        """``count`` bytes of a tar stream inflated so far: its members' bound plus FLOOR for the headers."""
        limit = self.unpacked
        if limit.most is not None and count > limit.most + FLOOR:
            raise VerifyError(
                f"unpacked size check failed: the tar stream inflates past {limit.most + FLOOR:,} bytes"
                f" (its members' bound + {MIB} of headers), {limit.why}"
            )

    def check_unpacked_total(self, count: int) -> None:
        """All is unpacked: ``count`` bytes must be what the table pins, when it pins it."""
        limit = self.unpacked
        if limit.exact and count != limit.most:
            raise VerifyError(f"unpacked size check failed: it unpacks to {count:,} bytes, {limit.why}")
