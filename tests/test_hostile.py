"""A hostile world: proxies that re-encode, error pages, wrong ranges, drip-feeding
servers, long Retry-Afters, tarballs that reach outside their lane, and a stop
asked for mid-transfer. Each against the real fault-injecting server, checking
what is on disk and what was asked of the server.
"""

import gzip
import io
import tarfile
import threading
import time

import pytest
from test_faults import (
    DARK,
    DARK_GZ,
    DEST,
    FAST,
    LIBRARY,
    assert_dark_absent,
    assert_dark_ok,
    fetch_dark,
    special,
    state_files,
    tarball,
)

from conftest import serving
from mirage_reffiles.errors import FetchError, Interrupted, UnpackError, VerifyError
from mirage_reffiles.testing.mirror import synthetic_bytes
from mirage_reffiles.testing.server import Fault
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.fetch import FetchRequest, fetch, fetch_tarball
from mirage_reffiles.transfer.http import RetryPolicy
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.door import Lane

HALF = len(DARK_GZ) // 2
PSFS = {f"mirage_data/nircam/gridded_psf_library/psf_{n}.fits": synthetic_bytes(f"psf{n}", 50_000) for n in range(2)}


@pytest.fixture
def site(tmp_path):
    with serving(tmp_path / "server", {"d/dark.fits.gz": DARK_GZ}) as server:
        yield server


@pytest.fixture
def stop():
    """interrupt.STOP, cleared again whatever the test did."""
    interrupt.STOP.clear()
    yield interrupt.STOP
    interrupt.STOP.clear()


def dark_request(site, mirage_data, name="d/dark.fits.gz", policy=FAST):
    return FetchRequest(site.url + name, mirage_data, "dark", "gz", DEST, policy=policy)


def keep_half(site, mirage_data):
    """A first run cut off halfway: the first half of the download is kept."""
    site.faults["d/dark.fits.gz"] = Fault(drop_after=HALF)
    with pytest.raises(FetchError, match="gave up after 0 retries"):
        fetch_dark(site, mirage_data, policy=RetryPolicy(retries=0))
    assert layout.partial_download_path(mirage_data, "dark", "gz").stat().st_size == HALF


# Content you can trust


@pytest.mark.parametrize(
    ("fault", "named"),
    [
        (Fault(html_page=True, content_encoding="gzip"), "Content-Encoding: gzip"),
        (Fault(html_page=True), "Content-Type: text/html"),
        (Fault(content_encoding="gzip"), "Content-Encoding: gzip"),
    ],
    ids=["gzipped-error-page", "error-page", "dark-gzipped-twice-and-labelled"],
)
def test_a_body_that_is_not_the_file_is_retried_and_never_stored(site, mirage_data, fault, named):
    site.faults["d/dark.fits.gz"] = fault
    log = io.StringIO()
    fetch_dark(site, mirage_data, log=log)
    assert_dark_ok(mirage_data)
    assert named in log.getvalue() and "retry 1 of 3" in log.getvalue()
    refused, served = site.requests
    assert refused.status == served.status == 200 and served.range is None  # nothing of the page was kept


def test_an_unlabelled_double_gzip_is_not_fits_and_is_fetched_once_more(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(content_encoding="")  # a proxy gzipped it again and dropped the label
    log = io.StringIO()
    fetch(dark_request(site, mirage_data), log)
    assert_dark_ok(mirage_data)
    assert "not a FITS file" in log.getvalue() and "fetching it once more from the start" in log.getvalue()
    assert [r.range for r in site.requests] == [None, None]


def test_bad_bytes_twice_fail_with_nothing_left(site, mirage_data):
    (site.root / "d/double.fits.gz").write_bytes(gzip.compress(DARK_GZ, mtime=0))
    with pytest.raises(VerifyError, match=r"is not a FITS file \(it begins b'\\x1f\\x8b"):
        fetch(dark_request(site, mirage_data, "d/double.fits.gz"), io.StringIO())
    assert len(site.requests) == 2
    assert_dark_absent(mirage_data)
    assert state_files(mirage_data) == []


@pytest.mark.parametrize(
    "fault", [Fault(html_page=True), Fault(wrong_range=1000)], ids=["error-page", "wrong-content-range"]
)
def test_a_bad_answer_to_a_resume_keeps_the_kept_bytes(site, mirage_data, fault):
    keep_half(site, mirage_data)
    site.faults["d/dark.fits.gz"] = fault
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    _, refused, resumed = site.requests
    assert refused.range == resumed.range == f"bytes={HALF}-"
    assert resumed.status == 206


def test_a_wrong_content_range_mid_download_asks_again(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(drop_after=HALF, wrong_range=0)
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    assert [(r.range, r.status) for r in site.requests] == [
        (None, 200),
        (f"bytes={HALF}-", 206),  # answered from byte 0: refused
        (f"bytes={HALF}-", 206),
    ]


def test_a_server_that_ignores_range_still_starts_over(site, mirage_data):
    keep_half(site, mirage_data)
    site.faults["d/dark.fits.gz"] = Fault(ignore_range=True)
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    assert [r.status for r in site.requests[1:]] == [200]


# Tarballs stay in their lane


def put_tarball(site, members, name="lib.tar.gz"):
    (site.root / "d" / name).write_bytes(tarball(members))
    return site.url + "d/" + name


def existing_files(mirage_data):
    """Files another row and the build itself already have, with what they hold."""
    files = {
        DEST: DARK,
        ".reffiles/records/dark.json": b'{"file_id": "dark"}',
        layout.ENV_FILE: b"export MIRAGE_DATA=/somewhere\n",
    }
    for path, data in files.items():
        (mirage_data / path).parent.mkdir(parents=True, exist_ok=True)
        (mirage_data / path).write_bytes(data)
    return files


def everything(mirage_data):
    return {p.relative_to(mirage_data).as_posix(): p.read_bytes() for p in mirage_data.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("member", "lane", "message"),
    [
        (f"mirage_data/{DEST}", Lane.of("cosmic_ray_library", "fgs"), "is outside its lane"),
        (f"mirage_data/{DEST}", Lane(claimed={DEST: "dark"}), "is a file of row 'dark'"),
        ("mirage_data/.reffiles/records/dark.json", Lane(), "belongs to the build itself"),
        (f"mirage_data/{layout.ENV_FILE}", Lane(), "belongs to the build itself"),
        ("mirage_data/archives/d/dark.fits.gz", Lane(), "belongs to the build itself"),
    ],
    ids=["dark-outside-the-lane", "dark-of-another-row", "record", "env-file", "kept-archive"],
)
def test_a_tarball_that_writes_outside_its_lane_is_refused_whole(site, mirage_data, member, lane, message):
    before = existing_files(mirage_data)
    url = put_tarball(site, {**LIBRARY, member: b"SIMPLE  = overwritten"})
    with pytest.raises(UnpackError, match=f"member {member!r} refused: .*{message}"):
        fetch_tarball(url, mirage_data, "lib", policy=FAST, lane=lane)
    assert {k: v for k, v in everything(mirage_data).items() if "/locks/" not in k} == before
    assert not layout.partial_download_path(mirage_data, "lib", "tar.gz").exists()  # the archive is deleted


def test_a_psf_library_may_not_write_into_psf_wings(site, mirage_data):
    lane = Lane.of("psf_library", "nircam")
    url = put_tarball(site, {**PSFS, "mirage_data/nircam/gridded_psf_library/psf_wings/wings.fits": DARK[:5000]})
    with pytest.raises(UnpackError, match="psf_wings/, another kind's folder: a psf_library tarball may only"):
        fetch_tarball(url, mirage_data, "psfs", policy=FAST, lane=lane)
    assert not mirage_data.joinpath("nircam").exists()
    assert state_files(mirage_data) == []
    # the same library without the intruder, with its folders' own entries, unpacks
    folders = {name: special(name, tarfile.DIRTYPE) for name in ("mirage_data", "mirage_data/nircam")}
    url = put_tarball(site, {**folders, **PSFS}, "good.tar.gz")
    fetch_tarball(url, mirage_data, "psfs", policy=FAST, lane=lane)
    for name, data in PSFS.items():
        assert (mirage_data / name.removeprefix("mirage_data/")).read_bytes() == data


def test_a_tarball_of_a_kind_without_a_lane_is_not_fetched(site, mirage_data):
    request = FetchRequest(site.url + "d/lib.tar.gz", mirage_data, "lib", "tar.gz", kind="mystery", instrument="fgs")
    with pytest.raises(FetchError, match="no folder is declared for tarballs of kind 'mystery'"):
        fetch(request, io.StringIO())
    assert site.requests == []


def test_a_dangling_hard_link_is_refused_cleanly(site, mirage_data):
    link = "mirage_data/fgs/cosmic_ray_library/hard.fits"
    url = put_tarball(site, {**LIBRARY, link: special(link, tarfile.LNKTYPE, "mirage_data/fgs/missing.fits")})
    with pytest.raises(UnpackError, match=f"unsafe member {link!r} refused: a link; an archive may hold files and"):
        fetch_tarball(url, mirage_data, "lib", policy=FAST, lane=Lane.of("cosmic_ray_library", "fgs"))
    assert not mirage_data.joinpath("fgs").exists()
    assert state_files(mirage_data) == []


def test_a_member_that_is_not_what_its_name_says_is_refused_and_fetched_once_more(site, mirage_data):
    page = b"<html><body>404 Not Found</body></html>"
    url = put_tarball(site, {**LIBRARY, "mirage_data/fgs/cosmic_ray_library/page.fits": page})
    request = FetchRequest(url, mirage_data, "lib", "tar.gz", policy=FAST, kind="cosmic_ray_library", instrument="fgs")
    log = io.StringIO()
    with pytest.raises(UnpackError, match=r"page.fits' refused: it should begin with b'SIMPLE  =', it begins with b'<"):
        fetch(request, log)
    assert "fetching it once more from the start" in log.getvalue()
    assert len(site.requests) == 2
    assert not mirage_data.joinpath("fgs").exists()
    assert state_files(mirage_data) == []


# Bounded time


def test_a_drip_feeding_server_fails_within_the_bound(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(drip=2)  # one byte every two seconds
    policy = RetryPolicy(retries=1, backoff=0.1, read_timeout=10, min_speed=1000, stall_window=2)
    # Each try stalls after one window (checked every tick); one backoff between the two tries.
    bound = (policy.retries + 1) * (policy.stall_window + 0.5) + policy.backoff + 1
    began = time.monotonic()
    with pytest.raises(FetchError, match=r"gave up after 1 retries: stalled: \d bytes in 2.\d s, below min_speed"):
        fetch_dark(site, mirage_data, policy=policy)
    elapsed = time.monotonic() - began
    assert 2 * policy.stall_window <= elapsed < bound
    first, second = site.requests
    assert first.range is None and second.range in ("bytes=1-", "bytes=2-")  # the trickle is kept


def test_a_dried_up_connection_times_out_by_the_loops_own_clock(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(stall=5)
    began = time.monotonic()
    fetch_dark(site, mirage_data, policy=RetryPolicy(retries=1, backoff=0.01, read_timeout=1.2))
    assert time.monotonic() - began < 4
    assert_dark_ok(mirage_data)
    assert site.requests[-1].range == "bytes=65536-"


def test_healthy_progress_restarts_the_count_of_retries(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(drop_every=len(DARK_GZ) // 5)  # every connection breaks after a fifth
    fetch_dark(site, mirage_data, policy=RetryPolicy(retries=1, backoff=0.01))
    assert_dark_ok(mirage_data)
    assert len(site.requests) == 6


def test_retry_after_as_an_http_date_is_honoured(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(statuses=[503], retry_after_date=3)
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    refused, served = site.requests
    assert 2.0 <= served.time - refused.time < 5  # the date is to the second


def test_retry_after_is_capped_at_the_ceiling(site, mirage_data):
    site.faults["d/dark.fits.gz"] = Fault(statuses=[429], retry_after=3600)
    log = io.StringIO()
    fetch_dark(site, mirage_data, policy=RetryPolicy(retries=1, backoff=0.01, max_retry_after=1.5), log=log)
    assert_dark_ok(mirage_data)
    refused, served = site.requests
    assert 1.5 <= served.time - refused.time < 3
    assert "retry 1 of 1 in 1.5 s" in log.getvalue()


def test_the_wait_before_a_retry():
    policy = RetryPolicy(backoff=1, max_backoff=60, max_retry_after=900)
    assert [policy.wait(n, None) for n in (1, 2, 3, 8)] == [1, 2, 4, 60]
    assert policy.wait(1, 120) == 120  # longer than max_backoff, since the server asked
    assert policy.wait(1, 7200) == 900


# Stopping on request


def fetch_in_thread(site, mirage_data, policy):
    outcome = {}

    def run():
        try:
            fetch_dark(site, mirage_data, policy=policy)
        except BaseException as error:
            outcome["error"] = error
        outcome["ended"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_a_stop_during_a_stalled_transfer_ends_it_at_once_and_keeps_the_bytes(site, mirage_data, stop):
    site.faults["d/dark.fits.gz"] = Fault(stall=30)
    partial = layout.partial_download_path(mirage_data, "dark", "gz")
    thread, outcome = fetch_in_thread(site, mirage_data, RetryPolicy(read_timeout=60))
    deadline = time.monotonic() + 10
    while not (partial.exists() and partial.stat().st_size == 65536):  # the first chunk, then the stall
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop.set()
    asked = time.monotonic()
    thread.join(5)
    assert isinstance(outcome["error"], Interrupted)
    assert outcome["ended"] - asked < 1.0
    assert_dark_absent(mirage_data)
    assert partial.read_bytes() == DARK_GZ[:65536]
    stop.clear()
    fetch_dark(site, mirage_data)
    assert_dark_ok(mirage_data)
    assert site.requests[-1].range == "bytes=65536-"


def test_a_stop_during_a_retrys_wait_ends_it_at_once(site, mirage_data, stop):
    site.faults["d/dark.fits.gz"] = Fault(statuses=[503], retry_after=60)
    thread, outcome = fetch_in_thread(site, mirage_data, RetryPolicy())
    deadline = time.monotonic() + 10
    while not site.requests or site.requests[0].status is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    stop.set()
    asked = time.monotonic()
    thread.join(5)
    assert isinstance(outcome["error"], Interrupted)
    assert outcome["ended"] - asked < 1.0
    assert len(site.requests) == 1


def test_a_stop_while_unpacking_keeps_the_complete_download(site, mirage_data, stop):
    members = {f"mirage_data/fgs/cosmic_ray_library/cr_{n:04}.fits": synthetic_bytes(str(n), 2048) for n in range(1500)}
    url = put_tarball(site, members)
    lane = Lane.of("cosmic_ray_library", "fgs")
    staging = layout.staging_dir(mirage_data, "lib")
    partial = layout.partial_download_path(mirage_data, "lib", "tar.gz")

    def stop_once_unpacking():
        deadline = time.monotonic() + 20
        while not (staging.is_dir() and any(staging.rglob("*.fits"))) and time.monotonic() < deadline:
            time.sleep(0.001)
        stop.set()

    watcher = threading.Thread(target=stop_once_unpacking)
    watcher.start()
    with pytest.raises(Interrupted, match=r"unpacking lib\.tar\.gz\.part stopped on request"):
        fetch_tarball(url, mirage_data, "lib", policy=FAST, lane=lane)
    watcher.join()
    assert partial.stat().st_size == (site.root / "d/lib.tar.gz").stat().st_size
    assert not staging.exists() and not (mirage_data / "fgs").exists()
    stop.clear()
    fetch_tarball(url, mirage_data, "lib", policy=FAST, lane=lane)
    assert [r.status for r in site.requests] == [200, 416]  # nothing fetched twice
    assert all((mirage_data / name.removeprefix("mirage_data/")).read_bytes() == data for name, data in members.items())
