"""Several sources for one file, against real servers on 127.0.0.1: failover in order, segments
from two sources at once, a keep_archives tree (over HTTP or as a folder) as a source, and a
build whose primary refuses connections."""

import gzip
import io
import socket

import pytest

from conftest import dark_request, expected_tree, fgs_raw_single, tree
from mirage_reffiles.testing.mirror import synthetic_bytes
from mirage_reffiles.testing.server import serve
from mirage_reffiles.transfer import segments
from mirage_reffiles.transfer.fetch import fetch
from mirage_reffiles.transfer.http import RetryPolicy, as_base_urls
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.records import read_record

FAST = RetryPolicy(retries=2, backoff=0.01, connect_timeout=5, read_timeout=5)
DARK = synthetic_bytes("mirrored", 6_000_000)
DARK_GZ = gzip.compress(DARK, compresslevel=1, mtime=0)
PATH = "nircam/darks/raw/A1/dark.fits.gz"
SEGMENT = 256 << 10  # bytes of a segment in these tests


@pytest.fixture
def budget():
    """The process-wide connection budget, reset after each test (requests with a cap configure it)."""
    yield
    segments.BUDGET.configure(None)


def site(root, with_dark=True):
    (root / PATH).parent.mkdir(parents=True)
    if with_dark:
        (root / PATH).write_bytes(DARK_GZ)
    return root


def closed_port_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there: connections are refused


def request(mirage_data, urls, connections=None):
    return dark_request(mirage_data, urls, PATH, DARK_GZ, policy=FAST, connections=connections, segment_size=SEGMENT)


def gets(server):
    return [r for r in server.gets() if r.path == PATH]


def test_base_url_may_list_several_sources():
    assert as_base_urls("http://a/x, http://b/y http://c") == ["http://a/x/", "http://b/y/", "http://c/"]
    assert as_base_urls(["http://a", "http://b/"]) == ["http://a/", "http://b/"]
    assert as_base_urls("http://a") == ["http://a/"]


def test_a_primary_refusing_connections_gives_way_to_the_next(tmp_path):
    with serve(site(tmp_path / "good")) as good:
        log = io.StringIO()
        final = fetch(request(tmp_path / "data", [closed_port_url(), good.url]), log)
    assert final.read_bytes() == DARK
    assert f"served by {good.url}{PATH}" in log.getvalue()
    assert read_record(tmp_path / "data", "dark").url == good.url + PATH


def test_a_primary_without_the_file_gives_way_to_the_next(tmp_path):
    with serve(site(tmp_path / "empty", with_dark=False)) as primary, serve(site(tmp_path / "good")) as good:
        log = io.StringIO()
        final = fetch(request(tmp_path / "data", [primary.url, good.url]), log)
    assert final.read_bytes() == DARK
    assert [r.status for r in gets(primary)] == [404]
    assert "404" in log.getvalue() and f"served by {good.url}{PATH}" in log.getvalue()


def test_a_primary_serving_a_corrupt_file_gives_way_to_a_good_secondary(tmp_path, budget):
    segments.BUDGET.configure(4, SEGMENT)
    corrupt = bytearray(DARK_GZ)
    corrupt[300_000::100_000] = bytes(len(corrupt[300_000::100_000]))  # whatever parts of it a source serves
    (site(tmp_path / "bad", with_dark=False) / PATH).write_bytes(corrupt)
    with serve(tmp_path / "bad") as bad, serve(site(tmp_path / "good")) as good:
        log = io.StringIO()
        final = fetch(request(tmp_path / "data", [bad.url, good.url], connections=4), log)
    assert final.read_bytes() == DARK
    text = log.getvalue()
    assert "sha256 check failed" in text or "corrupt gzip data" in text
    assert f"fetching it from the next source, {good.url}{PATH}" in text
    assert f"served by {good.url}{PATH}" in text


def test_two_sources_serve_segments_of_one_file(tmp_path, budget):
    rate = 500_000
    with serve(site(tmp_path / "one"), rate=rate) as one, serve(site(tmp_path / "two"), rate=rate) as two:
        log = io.StringIO()
        final = fetch(request(tmp_path / "data", [one.url, two.url], connections=4), log)
        assert segments.BUDGET.peak <= 4
    assert final.read_bytes() == DARK
    assert gets(one) and gets(two)  # both served parts of it
    assert f"{two.url}{PATH}: " in log.getvalue() and "bytes fetched in segments" in log.getvalue()


def test_segments_come_only_from_sources_whose_size_agrees(tmp_path, budget):
    other = tmp_path / "other"
    site(other, with_dark=False)
    (other / PATH).write_bytes(DARK_GZ + b"\0" * 10)  # another length: not the same file
    with serve(site(tmp_path / "one"), rate=500_000) as one, serve(other) as two:
        log = io.StringIO()
        final = fetch(request(tmp_path / "data", [one.url, two.url], connections=4), log)
    assert final.read_bytes() == DARK
    assert "not used for segments of this file" in log.getvalue()


def test_a_keep_archives_tree_is_a_source_over_http_or_as_a_folder(tmp_path):
    kept = tmp_path / "kept"
    with serve(site(tmp_path / "origin")) as origin:
        first = request(kept, [origin.url])
        first.kept_archive = layout.kept_archive_path(kept, PATH)
        fetch(first)
    archives = kept / layout.ARCHIVE_DIR
    assert (archives / PATH).read_bytes() == DARK_GZ
    with serve(archives) as copy:
        assert fetch(request(tmp_path / "over_http", [copy.url])).read_bytes() == DARK
    folder = as_base_urls(str(archives))[0]
    assert fetch(request(tmp_path / "from_folder", [closed_port_url(), folder])).read_bytes() == DARK


def test_a_build_fails_over_from_a_primary_refusing_connections(snakemake, mirror, server, table):
    _, files, _ = mirror
    snakemake.base_url = f"{closed_port_url()},{server.url}"
    result = snakemake("fgs_raw", config={"single_dark": "true"})
    built = tree(snakemake.mirage_data)
    built.pop("mirage_env.sh")
    assert built == expected_tree(files, fgs_raw_single(table[table.instrument == "fgs"]))
    logs = "".join(p.read_text() for p in (snakemake.mirage_data / layout.STATE_DIR / "logs").rglob("*.log"))
    assert f"served by {server.url}" in logs, result.stderr[-2000:]
