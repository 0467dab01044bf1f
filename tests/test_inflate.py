"""Gunzip with resume points: stopping anywhere and going on gives the same bytes."""

import gzip
import hashlib
import random
import struct
import zlib

import pytest

from mirage_reffiles.errors import UnpackError
from mirage_reffiles.testing.mirror import synthetic_bytes
from mirage_reffiles.unpack import inflate
from mirage_reffiles.unpack.hashing import Sha256
from mirage_reffiles.unpack.inflate import GzipInflater, ResumePoint, available

pytestmark = pytest.mark.skipif(not available(), reason="system zlib or OpenSSL not loadable")


@pytest.fixture(autouse=True, params=["zlib-ng", "system zlib"])
def library(request, monkeypatch):
    """Every test with each inflating library this module can use."""
    library, prefix = inflate.open_zlib(zlib_ng=request.param == "zlib-ng")
    if library is None:
        pytest.skip(f"{request.param} is not loadable here")
    monkeypatch.setattr(inflate, "_zlib", library)
    monkeypatch.setattr(inflate, "_PREFIX", prefix)
    return request.param


def member_with_every_header_field(data: bytes) -> bytes:
    """A gzip member with FEXTRA, FNAME, FCOMMENT and FHCRC set (Python's gzip writes only FNAME)."""
    header = b"\x1f\x8b\x08" + bytes([4 | 8 | 16 | 2]) + b"\0\0\0\0\0\x03"
    header += struct.pack("<H", 5) + b"extra" + b"dark.fits\0" + b"a comment\0" + b"\0\0"
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


UNPACKED = synthetic_bytes("inflate", 3_000_000)
STREAM = gzip.compress(UNPACKED, mtime=0) + member_with_every_header_field(UNPACKED[:200_000])
EXPECTED = UNPACKED + UNPACKED[:200_000]


def feed_in_pieces(inflater, data, rng, points=None, want=0.0):
    position = 0
    while position < len(data):
        size = rng.randint(1, 300_000)
        inflater.feed(data[position : position + size])
        position += size
        if rng.random() < want:
            inflater.want_point()
        if points is not None and (point := inflater.take_point()):
            points.append(point)


def test_a_stream_fed_in_pieces_unpacks_whole_with_each_member_checked():
    out = bytearray()
    inflater = GzipInflater(out.extend)
    feed_in_pieces(inflater, STREAM, random.Random(1))
    assert bytes(out) == EXPECTED
    assert inflater.at_end and inflater.members == 2
    assert inflater.output_crc == zlib.crc32(EXPECTED)
    assert inflater.output_offset == len(EXPECTED) and inflater.input_offset == len(STREAM)


@pytest.mark.parametrize("seed", range(6))
def test_going_on_from_any_resume_point_gives_the_same_bytes(seed):
    rng = random.Random(seed)
    points = []
    inflater = GzipInflater(lambda chunk: None)
    feed_in_pieces(inflater, STREAM, rng, points, want=0.6)
    assert len(points) >= 3
    for point in points:
        point = ResumePoint.from_dict(point.to_dict())  # as saved to disk
        assert point.output_crc == zlib.crc32(EXPECTED[: point.output_offset])
        out = bytearray(EXPECTED[: point.output_offset])
        resumed = GzipInflater.resume(point, out.extend)
        feed_in_pieces(resumed, STREAM[point.input_offset :], rng)
        assert bytes(out) == EXPECTED, point
        assert resumed.at_end


def test_a_point_is_taken_at_a_block_boundary_soon_after_it_is_asked_for():
    inflater = GzipInflater(lambda chunk: None)
    inflater.feed(STREAM[:100_000])
    assert inflater.take_point() is None  # none asked for
    inflater.want_point()
    inflater.feed(STREAM[100_000:400_000])
    point = inflater.take_point()
    assert point is not None and 100_000 <= point.input_offset <= 400_000
    assert inflater.take_point() is None  # one per request


def test_corrupt_bytes_fail_the_member_check():
    corrupt = bytearray(STREAM)
    corrupt[len(STREAM) // 3] ^= 0x01
    inflater = GzipInflater(lambda chunk: None)
    with pytest.raises(UnpackError, match="corrupt gzip data"):
        inflater.feed(bytes(corrupt))


@pytest.mark.parametrize("cut", [len(STREAM) // 2, len(STREAM) - 4, len(STREAM) - 8])
def test_a_cut_stream_is_not_at_its_end_and_not_gzip_is_refused(cut):
    inflater = GzipInflater(lambda chunk: None)
    inflater.feed(STREAM[:cut])  # the last cuts leave out part or all of the trailer
    assert not inflater.at_end
    with pytest.raises(UnpackError, match="not gzip data"):
        GzipInflater(lambda chunk: None).feed(b"PK\x03\x04 a zip file, not gzip")


def test_sha256_state_saved_midway_finishes_to_the_same_digest():
    sha = Sha256()
    sha.update(STREAM[:123_457])
    restored = Sha256.restore(sha.state())
    restored.update(STREAM[123_457:])
    assert restored.hexdigest() == hashlib.sha256(STREAM).hexdigest()
