"""Segmented downloads against a real server capping each connection: byte-exact joins, faults
inside later segments, kill -9 with segments in flight, a server refusing Range to helpers,
and a stop that ends every segment's thread keeping its bytes.

Segments are shrunk (256 KB) so that a file of 4 MB splits into 16 of them."""

import gzip
import hashlib
import io
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO
from mirage_reffiles.errors import Interrupted
from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.testing.mirror import synthetic_bytes
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.transfer import interrupt, partial, segments
from mirage_reffiles.transfer.fetch import FetchRequest, fetch, fetch_gzip
from mirage_reffiles.transfer.http import Expected, RetryPolicy
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.records import read_record

FAST = RetryPolicy(retries=3, backoff=0.01, connect_timeout=5, read_timeout=5)
DARK = synthetic_bytes("segmented", 6_000_000)
DARK_GZ = gzip.compress(DARK, compresslevel=1, mtime=0)
PATH = "nircam/darks/raw/A1/dark.fits.gz"
DEST = "nircam/darks/raw/A1/dark.fits"
RATE = 500_000  # bytes/s per connection: one connection takes about 8 s
SEGMENT = 256 << 10  # bytes of a segment in these tests


@pytest.fixture
def small_segments(monkeypatch):
    monkeypatch.setattr(partial, "RESUME_EVERY", 256 << 10)  # several resume points per file
    segments.BUDGET.configure(4, SEGMENT)
    yield
    segments.BUDGET.configure(None)


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "server"
    (root / PATH).parent.mkdir(parents=True)
    (root / PATH).write_bytes(DARK_GZ)
    return root


def expected():
    return Expected(size=len(DARK_GZ), sha256=hashlib.sha256(DARK_GZ).hexdigest())


def ranges(server):
    """(start, end excluded) of every GET of the dark, in order of arrival."""
    spans = []
    for request in server.requests_for(PATH):
        if request.method != "GET":
            continue
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.range or "bytes=0-")
        spans.append((int(match.group(1)), int(match.group(2)) + 1 if match.group(2) else len(DARK_GZ)))
    return spans


def test_a_large_file_is_fetched_on_every_free_connection_and_joined_in_order(site, tmp_path, small_segments):
    with serve(site, rate=RATE) as server:
        began = time.monotonic()
        final = fetch_gzip(server.url + PATH, tmp_path / "data", "dark", DEST, expected=expected(), policy=FAST)
        elapsed = time.monotonic() - began
        assert segments.BUDGET.peak <= 4  # never more connections than the cap
        # The server notices a client closing a connection at once; one may close while the next opens.
        assert server.peak <= 4 + 1
    assert final.read_bytes() == DARK
    assert len(ranges(server)) > 4
    assert elapsed < len(DARK_GZ) / RATE / 2.5  # four connections, not one
    assert not list((tmp_path / "data" / layout.STATE_DIR / "downloads").glob("*"))  # nothing left beside it


def test_a_slow_connection_splits_a_file_and_a_fast_one_does_not(site, tmp_path, small_segments):
    """Whether a file is split follows the time its rest takes on one connection, not its size: the
    same 3.9 MB take about 8 s at 500 KB/s and a few ms from a server without a cap. Either way the
    segment size would have said the opposite (split above two segments' bytes)."""
    segments.BUDGET.configure(4, len(DARK_GZ) // 2)  # not two segments' bytes
    with serve(site, rate=RATE) as server:
        fetch_gzip(server.url + PATH, tmp_path / "slow", "dark", DEST, expected=expected(), policy=FAST)
    assert len(ranges(server)) > 4  # split among the connections at hand
    segments.BUDGET.configure(4, SEGMENT)  # fifteen segments' bytes
    with serve(site) as server:
        fetch_gzip(server.url + PATH, tmp_path / "fast", "dark", DEST, expected=expected(), policy=FAST)
    assert ranges(server) == [(0, len(DARK_GZ))]
    segments.BUDGET.configure(None)
    with serve(site, rate=RATE * 4) as server:
        fetch_gzip(server.url + PATH, tmp_path / "uncapped", "dark", DEST, expected=expected(), policy=FAST)
    assert ranges(server) == [(0, len(DARK_GZ))]  # no cap: one connection per file


def test_whether_a_split_pays():
    """The rule itself: the time on the connections at hand, a request's cost included, against one."""
    assert segments.pays(50_000_000, 2e6, 0.02, 8)  # 25 s against 3.1 s
    assert not segments.pays(50_000_000, 200e6, 0.02, 8)  # 0.25 s: not worth a measuring error
    assert not segments.pays(50_000_000, None, 0.0, 8)  # not measured yet
    assert not segments.pays(50_000_000, 2e6, 0.02, 1)  # no connection to spare
    assert not segments.pays(2_000_000, 2e6, 2.0, 8)  # 1 s alone, 2.1 s with a request costing 2 s
    assert segments.pays(2_000_000, 2e6, 0.02, 2)  # 1 s alone, 0.52 s on two


def test_a_drop_inside_a_later_segment_resumes_that_segment(site, tmp_path, small_segments):
    with serve(site, rate=RATE) as server:
        server.faults[PATH] = Fault(drop_after=20_000, drop_from=1_000_000)  # once, in a later segment
        final = fetch_gzip(server.url + PATH, tmp_path / "data", "dark", DEST, expected=expected(), policy=FAST)
    assert final.read_bytes() == DARK
    spans = ranges(server)
    # Some segment was asked for again from 20,000 bytes past its start: the bytes it had were kept.
    starts = {start for start, _ in spans}
    assert server.faults[PATH].drop_after is None  # the drop happened
    assert any(start >= 1_000_000 and start + 20_000 in starts for start in starts)


def test_a_server_ignoring_range_for_helpers_falls_back_to_one_connection(site, tmp_path, small_segments):
    with serve(site, rate=2_000_000) as server:
        server.faults[PATH] = Fault(ignore_range=True)
        final = fetch_gzip(server.url + PATH, tmp_path / "data", "dark", DEST, expected=expected(), policy=FAST)
    assert final.read_bytes() == DARK
    # Each slot of the cap tries one segment before the server is known to ignore Range; the own
    # connection asks once more if it had handed over to a segment before its helper found out.
    requests = [r.range for r in server.gets()]
    assert len([r for r in requests if re.fullmatch(r"bytes=\d+-\d+", r or "")]) <= 4
    assert len([r for r in requests if not re.fullmatch(r"bytes=\d+-\d+", r or "")]) <= 2


def test_a_stop_ends_every_segment_thread_within_a_second_keeping_their_bytes(site, tmp_path, small_segments):
    downloads = tmp_path / "data" / layout.STATE_DIR / "downloads"
    with serve(site, rate=RATE) as server:
        stopper = threading.Timer(0.8, interrupt.STOP.set)
        stopper.start()
        began = threading.active_count()
        try:
            with pytest.raises(Interrupted):
                fetch_gzip(server.url + PATH, tmp_path / "data", "dark", DEST, expected=expected(), policy=FAST)
            stopped_at = time.monotonic()
            while threading.active_count() > began and time.monotonic() - stopped_at < 1.0:
                time.sleep(0.05)
            assert threading.active_count() <= began
        finally:
            interrupt.STOP.clear()
        assert sum(path.stat().st_size for path in downloads.glob("*.seg*")) > 0
        kept = partial.kept_bytes(layout.partial_download_path(tmp_path / "data", "dark", "gz"))
        first = len(server.requests)
        final = fetch_gzip(server.url + PATH, tmp_path / "data", "dark", DEST, expected=expected(), policy=FAST)
        assert final.read_bytes() == DARK
        sent_again = sum(request.sent for request in server.gets()[first:])
    # Kept bytes are not sent again: beyond the rest, only what was in flight when the own connection
    # handed over to a segment (it closes that connection mid-body).
    assert sent_again <= len(DARK_GZ) - kept + 8 * (64 << 10)


KILLABLE = """
import sys
from pathlib import Path
from mirage_reffiles.transfer.fetch import fetch_gzip
from mirage_reffiles.transfer import partial, segments
partial.RESUME_EVERY = 256 << 10
segments.BUDGET.configure(4, {segment})
fetch_gzip(sys.argv[1], Path(sys.argv[2]), "dark", {dest!r})
"""


def test_kill_9_with_segments_in_flight_resumes_each_from_what_it_kept(site, tmp_path, small_segments):
    data = tmp_path / "data"
    downloads = data / layout.STATE_DIR / "downloads"
    with serve(site, rate=RATE) as server:
        code = KILLABLE.format(segment=SEGMENT, dest=DEST)
        job = subprocess.Popen([sys.executable, "-c", code, server.url + PATH, str(data)],
                               env={"PYTHONPATH": str(REPO / "src")})  # fmt: skip
        deadline = time.monotonic() + 20
        while len(list(downloads.glob("*.seg*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        job.send_signal(signal.SIGKILL)
        job.wait()
        kept_segments = {path.name: path.stat().st_size for path in downloads.glob("*.seg*")}
        partial_file = layout.partial_download_path(data, "dark", "gz")
        kept_own, kept = partial.resume_offset(partial_file), partial.kept_bytes(partial_file)
        assert len(kept_segments) >= 2
        first = len(server.requests)
        final = fetch_gzip(server.url + PATH, data, "dark", DEST, expected=expected(), policy=FAST)
        assert final.read_bytes() == DARK
        assert read_record(data, "dark").sha256 == expected().sha256
        again = ranges(server)[first:]
        sent_again = sum(request.sent for request in server.gets()[first:])
    # The own connection resumes where the bytes kept one after another end (its resume point's
    # chain, with the segments it had reached), each segment beyond from its own size.
    starts = {start for start, _ in again}
    assert again[0][0] == kept_own
    for name, size in kept_segments.items():
        start, end = map(int, re.search(r"seg(\d+)-(\d+)$", name).groups())
        if start >= kept_own and size < end - start:
            assert start + size in starts, name
    # What was kept is not sent again; beyond the rest, only what was in flight when the own
    # connection handed over to a segment (it closes that connection mid-body).
    print(f"kept {kept} of {len(DARK_GZ)} bytes; sent again {sent_again}")
    assert sent_again <= len(DARK_GZ) - kept + 8 * (64 << 10)


WRITES = """
import sys
from pathlib import Path
from mirage_reffiles.transfer.fetch import fetch_gzip
from mirage_reffiles.transfer import segments
segments.BUDGET.configure(4, {segment})
fetch_gzip(sys.argv[1], Path(sys.argv[2]), "dark", {dest!r})
print(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["wchar"])
"""


def test_segment_bytes_are_written_once(site, tmp_path):
    """A segment's file joins the kept bytes as it is: the download writes each compressed byte once
    (and the unpacked file), not a second time into the resume buffer."""
    with serve(site, rate=RATE) as server:
        code = WRITES.format(segment=SEGMENT, dest=DEST)
        job = subprocess.run([sys.executable, "-c", code, server.url + PATH, str(tmp_path / "data")],
                             env={"PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True)  # fmt: skip
        assert job.returncode == 0, job.stderr
        in_segments = sum(r.sent for r in server.gets() if re.fullmatch(r"bytes=\d+-\d+", r.range or ""))
    assert (tmp_path / "data" / DEST).read_bytes() == DARK
    assert in_segments > len(DARK_GZ) // 2  # most bytes came in segments
    written = int(job.stdout.split()[-1])  # bytes this process passed to write(): files, progress lines
    assert written <= len(DARK) + len(DARK_GZ) * 1.05  # a second copy of the segments' bytes would be +90 %


def test_a_corrupt_segment_is_refused_and_the_file_fetched_again_from_a_good_source(site, tmp_path, small_segments):
    corrupt = bytearray(DARK_GZ)
    corrupt[300_000::100_000] = bytes(len(corrupt[300_000::100_000]))  # wrong bytes in every later segment
    (tmp_path / "bad" / PATH).parent.mkdir(parents=True)
    (tmp_path / "bad" / PATH).write_bytes(corrupt)
    with serve(site, rate=RATE) as good, serve(tmp_path / "bad", rate=RATE) as bad:
        log = io.StringIO()
        request = FetchRequest(url=good.url + PATH, mirrors=(bad.url + PATH,), mirage_data=tmp_path / "data",
                               file_id="dark", archive="gz", destination=DEST, expected=expected(), policy=FAST,
                               connections=4, segment_size=SEGMENT)  # fmt: skip
        final = fetch(request, log)
        assert final.read_bytes() == DARK
        assert bad.gets()  # it served segments
    text = log.getvalue()
    assert "sha256 check failed" in text or "corrupt gzip data" in text
    assert f"fetching it once more from the start from {good.url + PATH} alone" in text
    assert [r.range for r in good.gets()].count(None) == 2  # the whole file again, from the good source


def test_a_build_never_opens_more_connections_than_the_downloads_cap(tmp_path):
    """The real command line with `--cores 4 --resources downloads=2`: three darks, two at a time, the
    tail's spare connection fetching segments; the server never sees more than two connections."""
    table = load_table(REPO / "config" / "reference_files.csv")
    rows = table[(table.instrument == "fgs") & (table.kind == "dark") & (table.dark_type == "raw")].iloc[:3].copy()
    contents = {}
    for n, row in enumerate(rows.itertuples()):
        content = synthetic_bytes(f"capped/{n}", 4_000_000)
        packed = gzip.compress(content, compresslevel=1, mtime=0)
        (tmp_path / "site" / row.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / row.path).write_bytes(packed)
        rows.loc[row.Index, ["size_bytes", "size_exact", "sha256"]] = [
            str(len(packed)), "true", hashlib.sha256(packed).hexdigest()]  # fmt: skip
        contents[row.destination] = content
    rows.to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "work").mkdir()
    with serve(tmp_path / "site", rate=RATE) as server:
        run = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "all", "--cores", "4",
             "--resources", "downloads=2", "--config", f"base_url={server.url}", f"mirage_data={tmp_path / 'data'}",
             f"reference_table={tmp_path / 'table.csv'}", "instrument=fgs", "dark_type=raw",
             f"segment_mb={SEGMENT / 2**20}"],
            cwd=tmp_path / "work", capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        gets = [request for request in server.gets() if request.path.endswith(".gz")]
    for destination, content in contents.items():
        assert (tmp_path / "data" / destination).read_bytes() == content
    assert len(gets) > len(rows)  # the tail was fetched in segments
    # The server notices a client closing a connection (handing over to a segment) at once; one may close
    # while the next opens.
    assert server.peak <= 2 + 1
