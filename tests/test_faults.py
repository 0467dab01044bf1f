"""Faults during one file's fetch, against a real fault-injecting HTTP server.

Each test checks the outcome on disk: the final file is byte-exact, or absent
with nothing half-written under its name and the reason in the error.
"""

import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import REPO, serving
from mirage_reffiles.errors import FetchError, UnpackError
from mirage_reffiles.testing.mirror import synthetic_bytes
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.transfer import http, partial
from mirage_reffiles.transfer.fetch import fetch_gzip, fetch_tarball
from mirage_reffiles.transfer.http import Expected, RetryPolicy
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.records import read_record
from mirage_reffiles.unpack.inflate import available as inflate_available

FAST = RetryPolicy(retries=3, backoff=0.01, connect_timeout=5, read_timeout=5)
DARK = synthetic_bytes("dark", 2_000_000)
DARK_GZ = gzip.compress(DARK, mtime=0)
DEST = "nircam/darks/raw/A1/dark.fits"


def tarball(members):
    """A tar.gz of ``{name: bytes}``, plus special members given as TarInfo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


LIBRARY = {f"mirage_data/fgs/cosmic_ray_library/cr_{n}.fits": synthetic_bytes(f"cr{n}", 300_000) for n in range(3)}


@pytest.fixture
def site(tmp_path):
    with serving(tmp_path / "server", {"d/dark.fits.gz": DARK_GZ, "d/lib.tar.gz": tarball(LIBRARY)}) as server:
        yield server


def state_files(mirage_data):
    """Files left in the bookkeeping folder other than records, locks and logs."""
    state = mirage_data / layout.STATE_DIR
    return sorted(
        str(p.relative_to(state)) for p in state.rglob("*") if p.is_file() and p.parts[-2] not in ("records", "locks")
    )


def fetch_dark(site, mirage_data, policy=FAST, **kwargs):
    return fetch_gzip(site.url + "d/dark.fits.gz", mirage_data, "dark", DEST, policy=policy, **kwargs)


def assert_dark_ok(mirage_data):
    assert (mirage_data / DEST).read_bytes() == DARK
    assert not layout.temporary_path(mirage_data / DEST).exists()
    assert state_files(mirage_data) == []


def assert_dark_absent(mirage_data, unpacking_kept=False):
    """Not under its final name, not recorded; the unpacking so far kept only when a later run resumes from it."""
    assert not (mirage_data / DEST).exists()
    assert layout.temporary_path(mirage_data / DEST).exists() == unpacking_kept
    assert read_record(mirage_data, "dark") is None


def test_dropped_connection_resumes_with_a_range_request(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(drop_after=len(DARK_GZ) // 2)
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    first, second = site.requests
    assert first.range is None and first.status == 200
    assert second.range == f"bytes={len(DARK_GZ) // 2}-" and second.status == 206
    record = read_record(mirage_data, "dark")
    assert record.size == len(DARK_GZ) and record.files[0].size == len(DARK)


def test_a_server_that_ignores_range_is_restarted_cleanly(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(drop_after=len(DARK_GZ) // 3, ignore_range=True)
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    assert [r.status for r in site.requests] == [200, 200]


def test_server_errors_then_success(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(statuses=[500, 502, 503])
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    assert [r.status for r in site.requests] == [500, 502, 503, 200]


def test_429_waits_as_long_as_retry_after_says(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(statuses=[429], retry_after=1)
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    refused, served = site.requests
    assert refused.status == 429 and served.time - refused.time >= 1.0


def test_stalled_connection_hits_the_read_timeout_and_resumes(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(stall=3)
    policy = RetryPolicy(retries=2, backoff=0.01, read_timeout=0.5)
    fetch_dark(site, mirage_data, policy=policy)
    assert_dark_ok(mirage_data)
    stalled, resumed = site.requests
    assert stalled.range is None
    assert resumed.range == "bytes=65536-"  # the server stalls after its first 64 KiB chunk
    assert resumed.status == 206


def test_retries_run_out_but_the_bytes_are_kept_for_next_time(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(drop_after=len(DARK_GZ) // 2)
    site.faults["d/dark.fits.gz"].statuses = []
    policy = RetryPolicy(retries=0, backoff=0.01)
    with pytest.raises(FetchError, match="gave up after 0 retries: connection closed after"):
        fetch_dark(site, mirage_data, policy=policy)
    assert_dark_absent(mirage_data)  # no resume point in 650 kB: the unpacked bytes are no use to a later run
    partial = layout.partial_download_path(mirage_data, "dark", "gz")
    assert partial.read_bytes() == DARK_GZ[: len(DARK_GZ) // 2]
    fetch_dark(site, mirage_data)  # a later run picks up from there
    assert_dark_ok(mirage_data)
    assert site.requests[-1].range == f"bytes={len(DARK_GZ) // 2}-"


@pytest.fixture
def resume_every(monkeypatch):
    """Resume points every 100 kB instead of every 16 MB (and reads of 32 KiB), for a 1.3 MB download."""
    monkeypatch.setattr(partial, "RESUME_EVERY", 100_000)
    monkeypatch.setattr(http, "CHUNK_SIZE", 32 << 10)
    return 100_000


def downloads(mirage_data):
    return {p.name: p.stat().st_size for p in (mirage_data / layout.STATE_DIR / "downloads").glob("*")}


@pytest.mark.skipif(not inflate_available(), reason="resume points need the system zlib and OpenSSL")
def test_resume_points_keep_only_the_bytes_since_the_last_one(site, mirage_data, resume_every):
    cut = len(DARK_GZ) * 3 // 4
    site.faults["d/dark.fits.gz"] = Fault(drop_after=cut)
    with pytest.raises(FetchError, match="gave up after 0 retries"):
        fetch_dark(site, mirage_data, policy=RetryPolicy(retries=0))
    kept = downloads(mirage_data)
    assert "dark.gz.part.resume" in kept and "dark.gz.part" not in kept
    assert sum(kept.values()) < cut // 3  # the point (with its 32 KiB window) and the bytes since: not all received
    partial_file = layout.partial_download_path(mirage_data, "dark", "gz")
    assert partial.kept_bytes(partial_file) == cut
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    assert site.requests[-1].range == f"bytes={cut}-"
    assert read_record(mirage_data, "dark").sha256 == hashlib.sha256(DARK_GZ).hexdigest()


@pytest.mark.skipif(not inflate_available(), reason="resume points need the system zlib and OpenSSL")
def test_unpacked_bytes_that_do_not_match_the_resume_point_mean_starting_over(site, mirage_data, resume_every):
    site.faults["d/dark.fits.gz"] = Fault(drop_after=len(DARK_GZ) // 2)
    with pytest.raises(FetchError):
        fetch_dark(site, mirage_data, policy=RetryPolicy(retries=0))
    unpacking = layout.temporary_path(mirage_data / DEST)
    damaged = bytearray(unpacking.read_bytes())
    damaged[1000] ^= 0xFF
    unpacking.write_bytes(damaged)
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    assert site.requests[-1].range is None  # the whole file again, nothing kept trusted


def test_not_found_fails_at_once_naming_file_url_and_status(site, mirage_data):
    with pytest.raises(FetchError) as error:
        fetch_gzip(site.url + "d/missing.fits.gz", mirage_data, "missing", DEST, policy=FAST)
    assert f"{site.url}d/missing.fits.gz answered HTTP 404" in str(error.value)
    assert len(site.requests) == 1
    assert_dark_absent(mirage_data)
    assert state_files(mirage_data) == []


@pytest.mark.parametrize("where", [100, len(DARK_GZ) // 2, len(DARK_GZ) - 5])
def test_corrupted_gzip_bytes_are_caught_and_discarded(site, mirage_data, where):
    site.faults["d/dark.fits.gz"] = Fault(corrupt=where)
    with pytest.raises(UnpackError, match="corrupt gzip data"):
        fetch_dark(site, mirage_data)
    assert_dark_absent(mirage_data)
    assert state_files(mirage_data) == []


@pytest.mark.parametrize("cut", [1000, 4], ids=["in-the-data", "in-the-trailer"])
def test_truncated_gzip_is_caught(site, mirage_data, cut):
    (site.root / "d/short.fits.gz").write_bytes(DARK_GZ[:-cut])
    with pytest.raises(UnpackError, match="truncated gzip data"):
        fetch_gzip(site.url + "d/short.fits.gz", mirage_data, "dark", DEST, policy=FAST)
    assert_dark_absent(mirage_data)
    assert state_files(mirage_data) == []


@pytest.mark.parametrize(
    ("expected", "message"),
    [
        (Expected(sha256="0" * 64), "sha256 check failed"),
        (Expected(size=len(DARK_GZ) + 1), f"size check failed: the server announces {len(DARK_GZ):,} bytes, the table"),
    ],
)
def test_table_checks_discard_bad_bytes(site, mirage_data, expected, message):
    with pytest.raises(FetchError, match=message):
        fetch_dark(site, mirage_data, expected=expected)
    assert_dark_absent(mirage_data)
    assert state_files(mirage_data) == []


def test_pinned_sha256_passes(site, mirage_data):
    import hashlib

    fetch_dark(site, mirage_data, expected=Expected(size=len(DARK_GZ), sha256=hashlib.sha256(DARK_GZ).hexdigest()))
    assert_dark_ok(mirage_data)


def test_tarball_members_land_under_mirage_data(site, mirage_data):
    fetch_tarball(site.url + "d/lib.tar.gz", mirage_data, "lib", policy=FAST)
    for name, data in LIBRARY.items():
        assert (mirage_data / name.removeprefix("mirage_data/")).read_bytes() == data
    record = read_record(mirage_data, "lib")
    assert sorted(item.path for item in record.files) == sorted(n.removeprefix("mirage_data/") for n in LIBRARY)
    assert state_files(mirage_data) == []


def test_corrupted_tarball_is_caught(site, mirage_data):
    site.faults["d/lib.tar.gz"] = Fault(corrupt=2000)
    with pytest.raises(UnpackError, match="corrupt or truncated tarball"):
        fetch_tarball(site.url + "d/lib.tar.gz", mirage_data, "lib", policy=FAST)
    assert read_record(mirage_data, "lib") is None
    assert not (mirage_data / "fgs").exists()
    assert state_files(mirage_data) == []


def test_a_tarball_whose_gzip_trailer_is_wrong_is_refused(site, mirage_data):
    """tarfile stops at the tar's end; the gzip stream is read on to its trailer, whose CRC must match."""
    archive = bytearray(tarball(LIBRARY))
    archive[-8] ^= 0xFF  # the CRC-32 of the unpacked bytes
    (site.root / "d/crc.tar.gz").write_bytes(archive)
    with pytest.raises(UnpackError, match="corrupt or truncated tarball"):
        fetch_tarball(site.url + "d/crc.tar.gz", mirage_data, "crc", policy=FAST)
    assert read_record(mirage_data, "crc") is None
    assert not (mirage_data / "fgs").exists()
    assert state_files(mirage_data) == []


def special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize(
    "bad",
    [
        {"mirage_data/../../escaped.fits": b"x"},
        {"/tmp/absolute.fits": b"x"},
        {"mirage_data/fgs/link": special("mirage_data/fgs/link", tarfile.SYMTYPE, "../../../../outside")},
        {"mirage_data/fgs/hard": special("mirage_data/fgs/hard", tarfile.LNKTYPE, "/etc/passwd")},
        {"mirage_data/fgs/dev": special("mirage_data/fgs/dev", tarfile.CHRTYPE)},
        {"mirage_data/fgs/fifo": special("mirage_data/fgs/fifo", tarfile.FIFOTYPE)},
    ],
    ids=["dotdot", "absolute", "symlink-outside", "hardlink-outside", "device", "fifo"],
)
def test_unsafe_archives_are_refused_whole(site, mirage_data, tmp_path, bad):
    (site.root / "d/bad.tar.gz").write_bytes(tarball({**LIBRARY, **bad}))
    with pytest.raises(UnpackError, match="unsafe member"):
        fetch_tarball(site.url + "d/bad.tar.gz", mirage_data, "bad", policy=FAST)
    assert read_record(mirage_data, "bad") is None
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "server" not in p.parts]
    assert [p for p in written if p.parent.name not in ("locks", "logs")] == []
    assert not (tmp_path / "escaped.fits").exists() and not (tmp_path.parent / "escaped.fits").exists()


def test_two_runs_on_one_file_fetch_it_once(tmp_path, mirage_data):
    root = tmp_path / "server"
    (root / "d").mkdir(parents=True)
    (root / "d/dark.fits.gz").write_bytes(DARK_GZ)
    with serve(root, rate=2_000_000) as server:  # slow enough for the two to overlap
        code = (
            "import sys; from pathlib import Path; from mirage_reffiles.transfer.fetch import fetch_gzip; "
            f"fetch_gzip({server.url + 'd/dark.fits.gz'!r}, Path({str(mirage_data)!r}), 'dark', {DEST!r})"
        )
        env = {"PYTHONPATH": str(REPO / "src")}
        runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]  # fmt: skip
        outputs = [run.communicate(timeout=60)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert len(server.requests) == 1
    assert any("another run is fetching it" in out for out in outputs)
    assert_dark_ok(mirage_data)


@pytest.mark.skipif(not inflate_available(), reason="resume points need the system zlib and OpenSSL")
def test_a_killed_fetch_resumes_from_its_last_resume_point(tmp_path, mirage_data):
    root = tmp_path / "server"
    (root / "d").mkdir(parents=True)
    (root / "d/dark.fits.gz").write_bytes(DARK_GZ)
    partial_file = layout.partial_download_path(mirage_data, "dark", "gz")
    point = partial_file.with_name(partial_file.name + ".resume")
    with serve(root, rate=400_000) as server:  # about 3 s for the whole file
        code = (
            "from pathlib import Path; from mirage_reffiles.transfer import http, partial; "
            "from mirage_reffiles.transfer.fetch import fetch_gzip; "
            "partial.RESUME_EVERY = 100_000; http.CHUNK_SIZE = 32 << 10; "
            f"fetch_gzip({server.url + 'd/dark.fits.gz'!r}, Path({str(mirage_data)!r}), 'dark', {DEST!r})"
        )
        run = subprocess.Popen([sys.executable, "-c", code], env={"PYTHONPATH": str(REPO / "src")})
        deadline = time.monotonic() + 30
        while not (point.exists() and partial.kept_bytes(partial_file) > len(DARK_GZ) // 2):
            assert run.poll() is None and time.monotonic() < deadline, "the fetch ended before the moment to kill it"
            time.sleep(0.01)
        run.kill()
        run.wait()
        assert_dark_absent(mirage_data, unpacking_kept=True)
        kept = partial.kept_bytes(partial_file)
        fetch_dark(server, mirage_data)
    assert_dark_ok(mirage_data)
    assert server.requests[-1].range == f"bytes={kept}-"
    assert read_record(mirage_data, "dark").sha256 == hashlib.sha256(DARK_GZ).hexdigest()
