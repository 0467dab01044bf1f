"""Every wait has a clock, every failure a short answer: against real servers on 127.0.0.1 that drip their
headers, redirect to ftp:// or answer CRDS calls with nonsense, and the real command lines stopped by real
signals to their process group."""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from conftest import REPO, dark_request, fgs_raw_single
from mirage_reffiles.adapters.settings import check_config
from mirage_reffiles.errors import FetchError, Interrupted, UsageError
from mirage_reffiles.sources import crds as crds_cache
from mirage_reffiles.testing.crds_server import serve_crds, write_context
from mirage_reffiles.testing.mirror import synthetic_bytes
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.transfer import interrupt, segments
from mirage_reffiles.transfer.fetch import fetch
from mirage_reffiles.transfer.http import RetryPolicy, download
from mirage_reffiles.transfer.probe import PROBE_TIMEOUT, probe

DARK = synthetic_bytes("clock", 3_000_000)
DARK_GZ = gzip.compress(DARK, compresslevel=1, mtime=0)
PATH = "nircam/darks/raw/A1/dark.fits.gz"
#: Two tries of a request whose connect and headers may take 1 + 1 s.
SHORT = RetryPolicy(retries=1, backoff=0.01, connect_timeout=1, read_timeout=1)
SCHEMA = yaml.safe_load((REPO / "config/schemas/config.schema.yaml").read_text())


@pytest.fixture
def stop_flag():
    """interrupt.STOP, cleared after the test (it is process-wide)."""
    yield interrupt.STOP
    interrupt.STOP.clear()


@pytest.fixture
def budget():
    yield
    segments.BUDGET.configure(None)


def site(root):
    (root / PATH).parent.mkdir(parents=True)
    (root / PATH).write_bytes(DARK_GZ)
    return root


def request(mirage_data, urls, policy=SHORT, connections=None, segment_size=segments.SEGMENT_SIZE):
    return dark_request(mirage_data, urls, PATH, DARK_GZ, policy=policy, connections=connections,
                        segment_size=segment_size)  # fmt: skip


# One deadline per request, headers included.


def test_a_server_dripping_its_headers_fails_the_download_in_bounded_time(tmp_path):
    with serve(site(tmp_path / "site")) as server:
        server.faults[PATH] = Fault(header_drip=0.2)
        started = time.monotonic()
        with pytest.raises(FetchError, match="no answer from the server within 2 s"):
            fetch(request(tmp_path / "data", [server.url]), io.StringIO())
        took = time.monotonic() - started
    # Two tries of 2 s each (connect_timeout + read_timeout) and a backoff; without a clock, never.
    assert took < 8, f"took {took:.1f} s"
    assert len(server.gets()) == 2


def test_a_stop_ends_a_wait_for_headers_within_a_tick(tmp_path, stop_flag):
    patient = RetryPolicy(retries=1, connect_timeout=600, read_timeout=600)
    with serve(site(tmp_path / "site")) as server:
        server.faults[PATH] = Fault(header_drip=0.2)
        threading.Timer(1.0, stop_flag.set).start()
        started = time.monotonic()
        with pytest.raises(Interrupted):
            fetch(request(tmp_path / "data", [server.url], policy=patient), io.StringIO())
    assert time.monotonic() - started < 2.5


def test_the_probe_keeps_its_ten_seconds(tmp_path):
    with serve(site(tmp_path / "site")) as server:
        server.faults[PATH] = Fault(header_drip=0.2)
        started = time.monotonic()
        with pytest.raises(FetchError, match=f"did not answer within {PROBE_TIMEOUT:g} s"):
            probe(server.url + PATH)
        took = time.monotonic() - started
    assert PROBE_TIMEOUT - 0.5 < took < PROBE_TIMEOUT + 2, f"took {took:.1f} s"


def test_a_mirror_dripping_segment_headers_does_not_stall_a_healthy_primary(tmp_path, budget):
    with serve(site(tmp_path / "primary"), rate=1_000_000) as primary, serve(site(tmp_path / "mirror")) as mirror:
        mirror.faults[PATH] = Fault(header_drip=0.2)
        log = io.StringIO()
        started = time.monotonic()
        final = fetch(request(tmp_path / "data", [primary.url, mirror.url], connections=4, segment_size=256 << 10),
                      log)  # fmt: skip
        took = time.monotonic() - started
    assert final.read_bytes() == DARK
    assert mirror.gets(), "the mirror was never asked for a segment"
    assert f"{mirror.url}{PATH}: not used for segments of this file" in log.getvalue()
    assert took < 20, f"took {took:.1f} s"


def test_segments_of_a_few_bytes_still_move_on_and_stop_on_request(tmp_path, budget, stop_flag):
    """segment_mb is at least 1 in the schema; the scheduler itself never loops without progress."""
    with serve(site(tmp_path / "site"), rate=200_000) as server:
        segments.BUDGET.configure(4, 3)
        outcome = []

        def run():
            try:
                download(server.url + PATH, tmp_path / "dark.part", _Discard(), policy=SHORT, log=io.StringIO())
            except BaseException as error:
                outcome.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(1.5)
        stop_flag.set()
        thread.join(5)
    assert not thread.is_alive(), "the download spun on and ignored the stop"
    assert isinstance(outcome[0], Interrupted)
    with pytest.raises(UsageError) as refused:
        check_config({"segment_mb": 0.000001}, SCHEMA)
    assert "'segment_mb': 1e-06 is out of range; it must be 0, or at least 0.25 and at most 4096" in str(refused.value)


class _Discard:
    def write(self, chunk: bytes) -> None:
        pass

    def reset(self) -> None:
        pass


# The real command line: Ctrl-C while a download waits for headers, and a second signal.


def command(workdir, base_url, table, *args, **config):
    settings = {"base_url": base_url, "mirage_data": str(workdir / "mirage_data"), "reference_table": str(table)}
    settings.update(config)
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "4", *args,
            "--config", *(f"{key}={value}" for key, value in settings.items())]  # fmt: skip


def drip_one_dark(server, rows):
    """Headers dripped for a dark the start-up probe does not ask (it asks the first row to fetch)."""
    dark = next(row.path for row in rows.itertuples() if row.kind == "dark" and row.Index != rows.index[0])
    server.faults[dark] = Fault(header_drip=0.5)
    return dark


def wait_for(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_ctrl_c_ends_a_build_whose_download_waits_for_headers(tmp_path, mirror, table):
    rows = fgs_raw_single(table[table.instrument == "fgs"])
    with serve(mirror[0]) as server:
        dark = drip_one_dark(server, rows)
        build = subprocess.Popen(
            command(tmp_path, server.url, mirror[2], "fgs_raw", single_dark="true", connect_timeout=600,
                    read_timeout=600),
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        wait_for(lambda: any(r.path == dark for r in server.gets()), what="the dripping dark asked for")
        time.sleep(1.0)
        sent = time.monotonic()
        os.killpg(build.pid, signal.SIGINT)
        out, err = build.communicate(timeout=60)
        took = time.monotonic() - sent
    assert build.returncode == 130, err[-3000:]
    assert took < 3, f"took {took:.1f} s to stop"
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("Stopped on SIGINT")


def test_a_second_signal_ends_a_run_whose_job_does_not_stop(tmp_path, mirror, table):
    """The first SIGTERM asks the jobs to stop; one that does not (here every download is made deaf to the
    stop) cannot hold the run, its output piped to `head`: the second SIGTERM ends it."""
    rows = fgs_raw_single(table[table.instrument == "fgs"])
    deaf = tmp_path / "deaf.py"
    deaf.write_text(
        "from mirage_reffiles.transfer import interrupt\n"
        "interrupt.check = lambda what='download': None\n"
        "interrupt.requested = lambda: False\n"
        "from snakemake.cli import main\n"
        "main()\n"
    )
    with serve(mirror[0]) as server:
        dark = drip_one_dark(server, rows)
        cmd = command(tmp_path, server.url, mirror[2], "fgs_raw", single_dark="true", connect_timeout=3600,
                      read_timeout=3600)  # fmt: skip
        cmd[1:3] = [str(deaf)]
        build = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
        head = subprocess.Popen(["head", "-c", "100000"], stdin=build.stdout, stdout=subprocess.DEVNULL)
        build.stdout.close()  # head alone reads it, and leaves after 100 bytes
        wait_for(lambda: any(r.path == dark for r in server.gets()), what="the dripping dark asked for")
        time.sleep(1.0)
        os.killpg(build.pid, signal.SIGTERM)
        time.sleep(1.5)
        assert build.poll() is None, "the deaf job stopped at the first signal: nothing left to test"
        sent = time.monotonic()
        os.killpg(build.pid, signal.SIGTERM)
        build.wait(timeout=30)
        took = time.monotonic() - sent
        head.wait(timeout=10)
    assert build.returncode == 128 + signal.SIGTERM
    assert took < 3, f"took {took:.1f} s after the second signal"


# Short answers to numbers out of range and mistakes on the command line.


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 1e12])
@pytest.mark.parametrize(
    "key", [k for k, spec in SCHEMA["properties"].items() if spec.get("type") in ("number", "integer")]
)
def test_every_number_is_checked_for_its_range(key, value):
    with pytest.raises(UsageError, match=rf"setting '{key}': {value!r} is out of range; it must be "):
        check_config({key: value}, SCHEMA)


def test_inf_from_the_command_line_is_refused_in_a_few_lines(tmp_path, mirror):
    with serve(mirror[0]) as server:
        result = subprocess.run(command(tmp_path, server.url, mirror[2], "fgs_raw", connect_timeout="inf"),
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "setting 'connect_timeout': inf is out of range; it must be more than 0 and at most 3600" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 5
    assert not server.gets()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["{file}"], "is a file, not a folder"),
        (["{folder}", "--cores", "0"], "at least 1 (not 0)"),
        (["{folder}", "--cores", "-3"], "at least 1 (not -3)"),
    ],
)
def test_the_command_answers_a_file_for_a_folder_and_no_cores_in_a_line(tmp_path, args, words):
    (tmp_path / "file").write_text("not a folder")
    args = [arg.format(file=tmp_path / "file", folder=tmp_path / "folder") for arg in args]
    result = subprocess.run([sys.executable, "-m", "mirage_reffiles.cli", *args, "--base-url", "http://127.0.0.1:9/"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert words in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# Any failure of a source: the next source is tried.


def test_a_redirect_to_ftp_gives_way_to_the_next_source(tmp_path):
    with serve(site(tmp_path / "primary")) as primary, serve(site(tmp_path / "good")) as good:
        primary.faults[PATH] = Fault(redirect="ftp://127.0.0.1:9/dark.fits.gz")
        log = io.StringIO()
        final = fetch(request(tmp_path / "data", [primary.url, good.url]), log)
    assert final.read_bytes() == DARK
    assert "redirects to ftp://127.0.0.1:9/dark.fits.gz, which is not http(s)" in log.getvalue()
    assert f"served by {good.url}{PATH}" in log.getvalue()


# Malformed CRDS answers: one short refusal naming the server and the method.


@pytest.fixture(scope="module")
def crds_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("crds_server")
    write_context(root, "jwst_0001.pmap", reference_size=1000)
    return root


def _text_sizes(server):
    info = server.call("get_file_info_map", ["jwst", None])
    return {name: {**fields, "size": "twelve kilobytes"} for name, fields in info.items()}


MALFORMED = [
    # (method, its answer, words of the refusal)
    ("get_server_info", lambda server: {"observatory": "jwst"}, "no mapping_url for jwst"),
    ("get_file_info_map", lambda server: _text_sizes(server), "size 'twelve kilobytes'"),
    ("get_mapping_names", lambda server: b"[1, 2]", "a JSON list where an object was expected"),
    ("get_server_info", lambda server: {"crds_encoded": True, "crds_payload": "%%"}, "crds_payload"),
]


@pytest.mark.parametrize(("method", "answer", "words"), MALFORMED, ids=["missing-key", "size-text", "list", "payload"])
def test_a_malformed_crds_answer_is_refused_in_a_line(tmp_path, crds_root, method, answer, words):
    with serve_crds(crds_root, "jwst_0001.pmap") as server:
        server.answers[method] = answer(server)
        with pytest.raises(FetchError) as refused:
            crds_cache.fill_mappings(tmp_path / "cache", server.url, "jwst_0001.pmap")
    message = str(refused.value)
    assert message.startswith(f"the CRDS server {server.url} answered {method} with ")
    assert words in message and len(message) < 300 and "\n" not in message


def test_a_build_asking_a_crds_server_that_answers_nonsense_ends_in_a_few_lines(tmp_path, crds_root):
    with serve_crds(crds_root, "jwst_0001.pmap") as server:
        server.answers["get_mapping_names"] = b"[1, 2]"
        settings = {"crds_path": tmp_path / "cache", "crds_context": "jwst_0001.pmap", "crds_server_url": server.url,
                    "crds_modes": REPO / "config/crds_modes.csv"}  # fmt: skip
        cmd = command(tmp_path, "http://127.0.0.1:9/", REPO / "config/reference_files.csv", "crds", **settings)
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"the CRDS server {server.url} answered get_mapping_names with a JSON list" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 5, result.stderr
