"""What an interrupted download keeps, and how a later run picks it up (no network here)."""

import gzip
import hashlib

import pytest

from mirage_reffiles.testing.mirror import synthetic_bytes
from mirage_reffiles.transfer.partial import PartialStore, kept_bytes, pieces, resume_offset, segment_path
from mirage_reffiles.unpack.gunzip import GunzipSink, ResumableGunzipSink
from mirage_reffiles.unpack.inflate import available

pytestmark = pytest.mark.skipif(not available(), reason="resume points need the system zlib and OpenSSL")

DATA = synthetic_bytes("partial", 3_000_000)
STREAM = gzip.compress(DATA, mtime=0)
CHUNK = 20_000


def receive(store, start, stop):
    """What transfer.download does with each chunk of the body."""
    done, digest = store.open()
    assert done == start
    for position in range(done, stop, CHUNK):
        chunk = STREAM[position : min(position + CHUNK, stop)]
        store.write(chunk)
        digest.update(chunk)
        store.sink.write(chunk)
        done += len(chunk)
        store.written(done, digest)
    return done, digest


def stopped_midway(tmp_path):
    """A first run that received half the stream and failed; returns the partial and unpacking paths."""
    partial, output = tmp_path / "dark.gz.part", tmp_path / "dark.fits.part"
    first = PartialStore(partial, ResumableGunzipSink(output), every=200_000)
    receive(first, 0, len(STREAM) // 2)
    first.close()
    first.sink.discard(keep=True)  # as after a failure: the unpacked bytes stay for the resume point
    return partial, output


def finished_from(partial, output, kept):
    """A later run resumes at ``kept`` and ends with the whole file, its SHA-256 right."""
    second = PartialStore(partial, ResumableGunzipSink(output), every=200_000)
    done, digest = receive(second, kept, len(STREAM))
    second.close()
    second.sink.close()
    assert done == len(STREAM) and digest.hexdigest() == hashlib.sha256(STREAM).hexdigest()
    assert output.read_bytes() == DATA


def test_a_download_stopped_midway_goes_on_from_its_last_resume_point(tmp_path):
    partial, output = stopped_midway(tmp_path)
    kept = kept_bytes(partial)
    assert kept == len(STREAM) // 2
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("dark.gz.part*"))
    assert on_disk < 200_000 + 2 * CHUNK + 50_000  # bytes since the point, and the point: not the 1 MB received
    (tmp_path / "dark.gz.part.from123").write_bytes(b"left by a kill between two renames")

    finished_from(partial, output, kept)
    assert not (tmp_path / "dark.gz.part.from123").exists()


def test_an_unreadable_resume_point_means_starting_over(tmp_path):
    partial, output = stopped_midway(tmp_path)
    (tmp_path / "dark.gz.part.resume").write_text("{not json")
    second = PartialStore(partial, ResumableGunzipSink(output), every=200_000)
    receive(second, 0, len(STREAM))  # from the first byte: what was kept is not trusted
    second.close()
    second.sink.close()
    assert output.read_bytes() == DATA


def test_a_sink_that_cannot_resume_from_a_point_starts_over(tmp_path):
    """E.g. a run with keep_archives after one without: the whole file is needed, the point is no use."""
    partial, output = stopped_midway(tmp_path)
    second = PartialStore(partial, GunzipSink(output))
    receive(second, 0, len(STREAM))
    second.close()
    second.sink.close()
    assert output.read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.glob("dark.gz.part*")) == ["dark.gz.part"]  # the whole download, kept


def test_a_segment_file_joins_the_kept_bytes_as_it_is(tmp_path):
    """Bytes a helper connection fetched into a segment's file are not copied: the chain of kept files
    refers to that file, resume points past it delete it, and a later run resumes across it."""
    partial, output = tmp_path / "dark.gz.part", tmp_path / "dark.fits.part"
    start, end = len(STREAM) // 3, 2 * len(STREAM) // 3
    segment = segment_path(partial, start, end)
    segment.write_bytes(STREAM[start:end])  # as a helper fetched it
    first = PartialStore(partial, ResumableGunzipSink(output), every=200_000)
    done, digest = receive(first, 0, start)
    for position in range(start, end, CHUNK):
        chunk = STREAM[position : min(position + CHUNK, end)]
        first.write(chunk, segment)
        digest.update(chunk)
        first.sink.write(chunk)
        done += len(chunk)
        first.written(done, digest)
    first.close()
    first.sink.discard(keep=True)
    assert segment.read_bytes() == STREAM[start:end]  # the point is inside it: it stays, as it was
    own = [piece for piece in pieces(partial) if piece.end is None]
    assert sum(piece.size for piece in own) == 0  # no byte of the segment was written a second time
    assert resume_offset(partial) == kept_bytes(partial) == end

    finished_from(partial, output, end)
    assert not segment.exists()  # a resume point past it deleted it
