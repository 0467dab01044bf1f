"""What bytes may be accepted: gzip bombs, members made sparse to terabytes, empty archives and a
proxy's login page, as an adversary serves them from the real test server. Each run ends as soon as
the bytes pass what the table pins or estimates (with its margin) or what the server announced, and
says which check failed."""

import gzip
import io
import re
import subprocess
import sys
import tarfile
import time

import pytest
from test_faults import FAST, LIBRARY, assert_dark_absent, state_files, tarball

from conftest import REPO, TABLE_CSV, serving
from mirage_reffiles.errors import UnpackError, VerifyError
from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.testing.mirror import FITS_CARD
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.transfer.bounds import FLOOR, INFLATION, MARGIN, Bounds, Expected
from mirage_reffiles.transfer.fetch import FetchRequest, fetch
from mirage_reffiles.tree import layout
from mirage_reffiles.unpack.gunzip import ResumableGunzipSink

DEST = "nircam/darks/raw/A1/dark.fits"
#: 50 MB of zeros gzipped: about 50 KB on the wire.
BOMB = gzip.compress(FITS_CARD + bytes(50_000_000 - len(FITS_CARD)), mtime=0)
#: A row pinned at about 10 KB unpacked (its download size not pinned).
PINNED = Expected(size=None, unpacked=10_240, unpacked_exact=True)
#: An unpinned row whose estimates are 16 KB.
ESTIMATED = Expected(size=16_384, size_exact=False, unpacked=16_384, unpacked_exact=False)
TIB = 1 << 40


@pytest.fixture
def site(tmp_path):
    with serving(tmp_path / "server", {"d/bomb.fits.gz": BOMB}) as server:
        yield server


# The bound itself


def test_a_pin_bounds_exactly_and_an_estimate_with_its_margin():
    assert Bounds(PINNED).unpacked.most == 10_240 and Bounds(PINNED).unpacked.exact
    estimated = Bounds(ESTIMATED)
    assert estimated.compressed.most == estimated.unpacked.most == MARGIN * 16_384 + FLOOR
    estimated.announce(50_000)
    assert estimated.compressed.most == 50_000  # the server's own length, once within the table's bound
    with pytest.raises(VerifyError, match="size check failed: the server announces 17,000,000 bytes, past 16,842,752"):
        Bounds(ESTIMATED).announce(17_000_000)
    with pytest.raises(VerifyError, match="the server announces 100 bytes, the table pins 99"):
        Bounds(Expected(size=99)).announce(100)
    nothing = Bounds()
    assert nothing.unpacked.most is None
    nothing.announce(1000)  # with no unpacked size, the compressed one bounds what it may unpack to
    assert nothing.unpacked.most == INFLATION * 1000 + FLOOR
    with pytest.raises(VerifyError, match="unpacks to 10,000 bytes, the table pins 10,240"):
        Bounds(PINNED).check_unpacked_total(10_000)


def test_the_sink_stops_before_it_writes_past_the_bound(tmp_path):
    out = tmp_path / "dark.fits"
    sink = ResumableGunzipSink(out, check=Bounds(PINNED).check_unpacked)
    with pytest.raises(VerifyError, match="unpacks past 10,240 bytes, the table pins 10,240"):
        for start in range(0, len(BOMB), 1 << 16):
            sink.write(BOMB[start : start + (1 << 16)])
    assert out.stat().st_size <= 10_240
    sink.discard()


# Gzip bombs


def fetch_in_a_process(request_code: str, file_limit: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``fetch(<request_code>)`` in a Python whose files may not grow past ``file_limit`` bytes (the
    kernel refuses the write): what a fetch writes to disk is bounded by the test, not by its own account."""
    code = f"""
import io, resource, signal, sys
from pathlib import Path
from mirage_reffiles.transfer.bounds import Expected
from mirage_reffiles.transfer.fetch import FetchRequest, fetch
from mirage_reffiles.transfer.http import RetryPolicy
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, ({file_limit}, {file_limit}))
try:
    fetch({request_code}, io.StringIO())
except Exception as error:
    print(type(error).__name__, error)
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.parametrize(
    ("expected", "file_limit", "message"),
    [
        ("Expected(unpacked=10_240, unpacked_exact=True)", 1 << 20, "unpacks past 10,240 bytes, the table pins 10,240"),
        (
            "Expected(size=16_384, size_exact=False, unpacked=16_384, unpacked_exact=False)",
            MARGIN * 16_384 + FLOOR,
            f"unpacks past {MARGIN * 16_384 + FLOOR:,} bytes, the bound of 4 x the table's estimate \\(16,384\\)",
        ),
    ],
    ids=["pinned-10KB", "estimated-16KB"],
)
def test_a_gzip_bomb_stops_at_the_bound_and_says_so(site, mirage_data, expected, file_limit, message):
    request = (
        f"FetchRequest({site.url + 'd/bomb.fits.gz'!r}, Path({str(mirage_data)!r}), 'dark', 'gz', {DEST!r},"
        f" expected={expected}, policy=RetryPolicy(retries=1, backoff=0.01))"
    )
    began = time.monotonic()
    result = fetch_in_a_process(request, file_limit)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("VerifyError unpacked size check failed"), result.stdout + result.stderr[-3000:]
    assert re.search(message, result.stdout)
    assert "File too large" not in result.stdout + result.stderr  # it never reached the test's own limit
    assert time.monotonic() - began < 60
    assert [r.status for r in site.gets()] == [200, 200]  # once more from the start, then the error stands
    assert_dark_absent(mirage_data)
    assert state_files(mirage_data) == []


def test_a_body_past_the_tables_bound_is_refused_before_it_arrives(tmp_path, mirage_data):
    small = Expected(size=1_000, size_exact=False, unpacked=1_000, unpacked_exact=False)
    (tmp_path / "big.fits.gz").write_bytes(b"\0" * (MARGIN * 1_000 + FLOOR + 1))
    with serve(tmp_path, rate=4_000_000) as server:  # the body would take 4 s to arrive
        request = FetchRequest(server.url + "big.fits.gz", mirage_data, "dark", "gz", DEST, expected=small,
                               policy=FAST)  # fmt: skip
        began = time.monotonic()
        with pytest.raises(VerifyError, match=f"the server announces {MARGIN * 1_000 + FLOOR + 1:,} bytes, past"):
            fetch(request, io.StringIO())
        assert time.monotonic() - began < 3  # refused from the headers, twice, not after the body
    assert_dark_absent(mirage_data)
    assert state_files(mirage_data) == []


# Tar members and empty archives


def sparse_tarball(name: str, size: int) -> bytes:
    """A tar.gz holding one GNU sparse member ``name`` that claims ``size`` bytes: its first 512 are stored
    (a FITS card), the rest is a hole. Extracted, it is a file of ``size`` bytes that takes no disk."""
    data = FITS_CARD.ljust(512, b" ")
    header = bytearray(512)

    def put(offset: int, value: bytes) -> None:
        header[offset : offset + len(value)] = value

    put(0, name.encode())
    put(100, b"0000644\0")
    put(108, b"0000000\0")
    put(116, b"0000000\0")
    put(124, b"%011o\0" % len(data))
    put(136, b"%011o\0" % 0)
    put(156, b"S")  # GNU sparse
    put(257, b"ustar  \0")
    put(386, b"%011o\0" % 0 + b"%011o\0" % len(data))  # one stored region: offset 0, 512 bytes
    put(483, bytes([0x80]) + size.to_bytes(11, "big"))  # the real size, in base 256
    put(148, b" " * 8)
    put(148, b"%06o\0 " % sum(header))
    return gzip.compress(bytes(header) + data + bytes(1024), mtime=0)


@pytest.mark.parametrize(
    "expected",
    [Expected(size=None, unpacked=2_000_000, unpacked_exact=False), Expected()],
    ids=["estimated", "nothing-but-the-servers-length"],
)
def test_a_member_made_sparse_to_terabytes_is_refused_from_its_header(site, mirage_data, expected):
    member = "mirage_data/fgs/cosmic_ray_library/huge.fits"
    (site.root / "d/sparse.tar.gz").write_bytes(sparse_tarball(member, 4 * TIB))
    request = FetchRequest(site.url + "d/sparse.tar.gz", mirage_data, "lib", "tar.gz", expected=expected,
                           policy=FAST, kind="cosmic_ray_library", instrument="fgs")  # fmt: skip
    began = time.monotonic()
    with pytest.raises(VerifyError, match=f"member '{member}' \\(4,398,046,511,104 bytes\\) says it unpacks past"):
        fetch(request, io.StringIO())
    assert time.monotonic() - began < 10
    assert not (mirage_data / "fgs").exists() and not layout.staging_dir(mirage_data, "lib").exists()
    assert state_files(mirage_data) == []


def test_a_tarball_past_its_pinned_unpacked_size_is_refused(site, mirage_data):
    (site.root / "d/lib.tar.gz").write_bytes(tarball(LIBRARY))
    pinned = Expected(unpacked=sum(map(len, LIBRARY.values())) - 1, unpacked_exact=True)
    request = FetchRequest(site.url + "d/lib.tar.gz", mirage_data, "lib", "tar.gz", expected=pinned, policy=FAST,
                           kind="cosmic_ray_library", instrument="fgs")  # fmt: skip
    with pytest.raises(VerifyError, match="says it unpacks past 899,999 bytes, the table pins 899,999"):
        fetch(request, io.StringIO())
    assert not (mirage_data / "fgs").exists()


def test_an_empty_archive_is_refused_and_leaves_no_record(site, mirage_data):
    folder = tarfile.TarInfo("mirage_data/fgs/cosmic_ray_library")
    folder.type = tarfile.DIRTYPE
    (site.root / "d/empty.tar.gz").write_bytes(tarball({folder.name: folder}))
    request = FetchRequest(site.url + "d/empty.tar.gz", mirage_data, "lib", "tar.gz", policy=FAST,
                           kind="cosmic_ray_library", instrument="fgs")  # fmt: skip
    with pytest.raises(UnpackError, match=r"empty archive: lib\.tar\.gz\.part holds no file to extract"):
        fetch(request, io.StringIO())
    assert len(site.gets()) == 2  # once more from the start, then the error stands
    assert not layout.record_path(mirage_data, "lib").exists()  # nothing claims it is there
    assert state_files(mirage_data) == []


# The sizes command


def run_sizes(table_csv, server, *options):
    command = [sys.executable, "-m", "mirage_reffiles.sizes", "--table", str(table_csv), "--base-url", server.url]
    return subprocess.run([*command, *options], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_sizes_behind_a_login_page_leaves_the_table_as_it_was(tmp_path, mirror, server):
    table_csv = tmp_path / "table.csv"
    table_csv.write_bytes(mirror[2].read_bytes())
    before = table_csv.read_bytes()
    for path in load_table(TABLE_CSV).path:
        server.faults[path] = Fault(html_page=True)  # HEAD answered 200 text/html, as a proxy's login page is
    result = run_sizes(table_csv, server)
    assert result.returncode == 1
    assert "no change to" in result.stderr and "Content-Type: text/html" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert table_csv.read_bytes() == before


def test_sizes_keeps_every_pin_unless_asked_and_names_what_changed(tmp_path, mirror):
    table_csv = tmp_path / "table.csv"
    table_csv.write_bytes(mirror[2].read_bytes())
    pinned = load_table(table_csv)
    changed = pinned.iloc[0]
    served = tmp_path / "served"
    for row in pinned.itertuples():
        (served / row.path).parent.mkdir(parents=True, exist_ok=True)
        (served / row.path).write_bytes(
            (mirror[0] / row.path).read_bytes() + (b"x" if row.Index == changed.name else b"")
        )
    with serve(served) as server:
        held = run_sizes(table_csv, server)
        assert held.returncode == 0, held.stderr
        assert f"{changed.file_id}: changed size on the server" in held.stdout and "left as it was" in held.stdout
        assert "--clear-changed-pins" in held.stdout
        kept = load_table(table_csv)
        assert kept.loc[changed.name, ["size_bytes", "sha256"]].tolist() == [changed.size_bytes, changed.sha256]
        assert (kept.sha256 == pinned.sha256).all()

        cleared = run_sizes(table_csv, server, "--clear-changed-pins")
        assert cleared.returncode == 0, cleared.stderr
        assert "pins cleared" in cleared.stdout
    after = load_table(table_csv)
    assert after.loc[changed.name, "size_bytes"] == str(int(changed.size_bytes) + 1)
    assert after.loc[changed.name, ["sha256", "unpacked_exact"]].tolist() == ["", "false"]
    assert (after.drop(changed.name).sha256 == pinned.drop(changed.name).sha256).all()


def test_sizes_against_a_server_dripping_its_headers_ends_in_its_time(tmp_path, mirror, server):
    table = load_table(mirror[2])
    table_csv = tmp_path / "table.csv"
    table.iloc[:3].to_csv(table_csv, index=False)
    before = table_csv.read_bytes()
    server.faults[table.path.iloc[1]] = Fault(header_drip=0.5)  # one byte of headers every half second, forever
    started = time.monotonic()
    result = run_sizes(table_csv, server, "--timeout", "3")
    assert time.monotonic() - started < 20
    assert result.returncode == 1 and "no answer to HEAD within 3 s" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert table_csv.read_bytes() == before
