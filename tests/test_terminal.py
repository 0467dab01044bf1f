"""A person at the terminal: Ctrl-C and the other stop signals, the live display, and short
answers to mistakes. Everything runs the real command line against a real (throttled) server."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SLOW, fgs_raw_single
from mirage_reffiles.testing.server import serve


def command(workdir: Path, base_url: str, table: Path, *args: str, **config) -> list[str]:
    settings = {"base_url": base_url, "mirage_data": str(workdir / "mirage_data"), "reference_table": str(table)}
    settings.update(config)
    return [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args,
        "--config", *(f"{key}={value}" for key, value in settings.items()),
    ]  # fmt: skip


def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def dark_gets(server, rows):
    paths = set(rows[rows.kind == "dark"].path)
    return [r for r in server.requests if r.method == "GET" and r.path in paths]


def start_build(workdir, server, mirror, target="fgs_raw", **config):
    """The build in a process group of its own, as a terminal's foreground job is.

    One connection per file (segment_mb=0): the darks are not split over
    the spare connections, so they are still running when the signal comes.
    """
    config = {"segment_mb": 0, **config}
    cmd = command(workdir, server.url, mirror[2], target, "--cores", "8", single_dark="true", **config)
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_keeps_every_byte_and_the_next_run_resumes(tmp_path, slow_mirror, signum):
    root, expected, table_csv, pinned = slow_mirror
    rows = fgs_raw_single(pinned)
    with serve(root, rate=SLOW) as server:
        build = start_build(tmp_path, server, slow_mirror)
        # Both darks on the wire, and the small tarballs (about a second each) done.
        wait_for(lambda: len(dark_gets(server, rows)) == 2, what="both darks requested")
        records = tmp_path / "mirage_data/.reffiles/records"
        wait_for(lambda: len(list(records.glob("*.json"))) >= 2, what="the tarballs finished")
        time.sleep(0.5)
        sent = time.monotonic()
        os.killpg(build.pid, signum)
        out, err = build.communicate(timeout=30)
        took = time.monotonic() - sent
        assert build.returncode == 128 + signum
        assert took <= 2.0, f"the run took {took:.1f} s to stop"
        assert "Traceback" not in out + err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"Stopped on {signal.Signals(signum).name}: 2 download(s) interrupted")
        assert "kept" in last and "run the same command again" in last.lower()
        done_before = {r.path for r in server.requests if r.method == "GET"} - set(rows[rows.kind == "dark"].path)
        # The preview counts only what is still to come.
        preview = subprocess.run(command(tmp_path, server.url, table_csv, "fgs_raw", "-n", single_dark="true"),
                                 cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
        darks = rows[rows.kind == "dark"]
        assert "more are kept from interrupted downloads" in preview.stdout
        to_come = int(re.search(r"to download: .* \(([\d,]+) bytes\)", preview.stdout).group(1).replace(",", ""))
        assert 0 < to_come < sum(map(int, darks.size_bytes))
        first = len(server.requests)
        again = subprocess.run(command(tmp_path, server.url, table_csv, "fgs_raw", single_dark="true"),
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        later = [r for r in server.requests[first:] if r.method == "GET"]
        # Every interrupted dark resumes with Range requests (one, or several segments of what is left);
        # nothing finished is asked for again.
        assert {r.path for r in later} == set(rows[rows.kind == "dark"].path)
        assert all(r.range and r.range.startswith("bytes=") and r.range != "bytes=0-" for r in later)
        assert not done_before & {r.path for r in later}
    for row in rows.itertuples():
        for path, data in expected[row.file_id].items():
            assert (tmp_path / "mirage_data" / path).read_bytes() == data


def test_ctrl_c_twice_still_stops_cleanly(tmp_path, slow_mirror):
    root, _, _, pinned = slow_mirror
    rows = fgs_raw_single(pinned)
    with serve(root, rate=SLOW) as server:
        build = start_build(tmp_path, server, slow_mirror)
        wait_for(lambda: len(dark_gets(server, rows)) == 2, what="both darks requested")
        time.sleep(0.5)
        os.killpg(build.pid, signal.SIGINT)
        time.sleep(0.1)
        os.killpg(build.pid, signal.SIGINT)
        out, err = build.communicate(timeout=30)
    assert build.returncode == 130
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith("Stopped on SIGINT")


def read_pty(fd: int, until: float) -> str:
    chunks = []
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data.decode(errors="replace"))
    return "".join(chunks)


def test_progress_is_drawn_in_place_on_a_terminal(tmp_path, slow_mirror):
    root, _, table_csv, _ = slow_mirror
    with serve(root, rate=SLOW) as server:
        cmd = command(tmp_path, server.url, table_csv, "fgs_raw", "--cores", "8", single_dark="true")
        pid, fd = pty.fork()
        if pid == 0:  # the child: the build, on the pseudo-terminal
            os.chdir(tmp_path)
            os.execv(sys.executable, cmd)
        screen = read_pty(fd, time.monotonic() + 60)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, screen[-3000:]
    assert "\x1b[" in screen  # redrawn in place
    assert "Fetched 0 of 4 files" in screen
    assert "MB/s" in screen or "kB/s" in screen
    assert "%" in screen
    # Snakemake's per-job blocks are left out: a normal run fits on a screen.
    assert "rule fetch_dark" not in screen and "jobid" not in screen
    assert "Traceback" not in screen


def test_progress_lines_when_not_a_terminal(tmp_path, slow_mirror):
    root, _, table_csv, _ = slow_mirror
    with serve(root, rate=SLOW) as server:
        cmd = command(
            tmp_path, server.url, table_csv, "fgs_raw", "--cores", "8", single_dark="true", progress_interval=1
        )
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("[progress]")]
    assert len(lines) >= 3
    assert any("%" in line and "/s" in line for line in lines)
    assert "\x1b[" not in result.stderr
    assert len(result.stderr.splitlines()) < 60
    assert re.search(r"^Fetched 4 files, [\d.]+ MB in \d+s \(", result.stderr, re.MULTILINE)


def test_verbose_shows_snakemakes_job_blocks(tmp_path, slow_mirror):
    root, _, table_csv, _ = slow_mirror
    with serve(root) as server:
        cmd = command(tmp_path, server.url, table_csv, "fgs_raw", "--cores", "8", single_dark="true", verbose="true")
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rule fetch_dark" in result.stderr


# Short answers: a few lines, no traceback, the fix named, nothing fetched.


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MISTAKES = [
    # (target, config, exit status, words of the answer)
    ("fgs_raw", {"sigle_dark": "true"}, 2, ["unknown setting 'sigle_dark'", "did you mean 'single_dark'"]),
    ("fgs_raw", {"dark_type": "cooked"}, 2, ["'dark_type'", "'cooked' is not one of linearized, raw, both"]),
    ("fgs_raw", {"single_dark": "maybe"}, 2, ["'single_dark'", "not true or false"]),
    ("fgs_cooked", {}, 2, ["unknown target 'fgs_cooked'", "fgs_raw", "nircam_linearized"]),
    ("fgs_raw", {"mirage_data": "/etc/hostname"}, 2, ["is a file, not a folder", "mirage_data"]),
    ("fgs_raw", {"mirage_data": "/tmp/a{b}"}, 2, ["wildcards", "without them"]),
    ("fgs_raw", {"base_url": "http://127.0.0.1:{port}/"}, 1, ["refused the connection", "base_url"]),
    ("fgs_raw", {"base_url": "http://no-such-host.invalid/"}, 1, ["cannot resolve", "no-such-host.invalid"]),
]


@pytest.mark.parametrize(("target", "config", "status", "words"), MISTAKES, ids=lambda v: str(v)[:30])
def test_a_mistake_gets_a_short_answer(workdir, mirror, target, config, status, words):
    config = {key: value.replace("{port}", str(closed_port())) for key, value in config.items()}
    with serve(mirror[0]) as server:
        cmd = command(workdir, config.pop("base_url", server.url), mirror[2], target, **config)
        started = time.monotonic()
        result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    assert "Traceback" not in output and 'File "' not in output
    assert len(result.stderr.strip().splitlines()) <= 5, result.stderr
    for word in words:
        assert word in result.stderr
    assert not [r for r in server.requests if r.method == "GET"]
    assert took < 15


def test_a_build_that_does_not_fit_says_so_before_any_download(workdir, mirror, table):
    huge = mirror[2].parent / "huge.csv"
    pinned = table.copy()
    pinned["size_bytes"], pinned["size_exact"] = str(10**16), "true"
    pinned.to_csv(huge, index=False)
    with serve(mirror[0]) as server:
        result = subprocess.run(command(workdir, server.url, huge, "fgs_raw"), cwd=workdir, capture_output=True,
                                text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "not starting fgs_raw" in result.stderr and "ignore_free_space=true" in result.stderr
    assert server.requests == []


@pytest.fixture
def https_server(mirror, tmp_path):
    """The mirror over HTTPS with a self-signed certificate no one trusts, and that certificate."""
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    with serve(mirror[0]) as server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        yield server, cert


def test_an_untrusted_certificate_names_ssl_cert_file(workdir, mirror, https_server):
    server, cert = https_server
    url = server.url.replace("http://", "https://")
    result = subprocess.run(command(workdir, url, mirror[2], "fgs_raw", skip_darks="true"), cwd=workdir,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "not trusted" in result.stderr and "SSL_CERT_FILE" in result.stderr
    assert "Traceback" not in result.stderr
    # Trusting it as the message says makes the same command work.
    env = {**os.environ, "SSL_CERT_FILE": str(cert)}
    trusted = subprocess.run(command(workdir, url, mirror[2], "fgs_raw", skip_darks="true"), cwd=workdir,
                             capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert trusted.returncode == 0, trusted.stderr[-3000:]


# The same answers from the installed command.


def cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirage_reffiles.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_the_command_line_answers_mistakes_in_a_few_lines(workdir, mirror):
    with serve(mirror[0]) as server:
        small = ("--instrument", "fgs", "--single-dark", "--config", f"reference_table={mirror[2]}")
        bad_key = cli(str(workdir), *small, "--base-url", server.url, "--config", "sigle_dark=true", cwd=workdir)
        refused = cli(str(workdir), *small, "--base-url", f"http://127.0.0.1:{closed_port()}/", cwd=workdir)
        huge = workdir / "huge.csv"
        table = Path(mirror[2]).read_text().splitlines()
        head = table[0].split(",")
        size = head.index("size_bytes")
        rows = [line.split(",") for line in table[1:]]
        for row in rows:
            row[size] = str(10**16)
        huge.write_text("\n".join([table[0], *(",".join(row) for row in rows)]) + "\n")
        full = cli(str(workdir), "--base-url", server.url, "--config", f"reference_table={huge}", cwd=workdir)
    assert bad_key.returncode == 2 and "did you mean 'single_dark'" in bad_key.stderr
    assert refused.returncode == 1 and "refused the connection" in refused.stderr
    assert full.returncode == 1 and "--ignore-free-space" in full.stderr
    for result in (bad_key, refused, full):
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 5, result.stderr
    assert server.requests == []


def test_the_command_and_the_python_call_stop_on_ctrl_c_too(tmp_path, slow_mirror):
    root, _, table_csv, pinned = slow_mirror
    rows = fgs_raw_single(pinned)
    with serve(root, rate=SLOW) as server:
        common = ["--instrument", "fgs", "--dark-type", "raw", "--single-dark", "--base-url", server.url,
                  "--config", f"reference_table={table_csv}"]  # fmt: skip
        call = (
            "import sys; from mirage_reffiles import download_reffiles\n"
            "try:\n"
            f"    download_reffiles({str(tmp_path / 'api')!r}, instrument='fgs', dark_type='raw', single_dark=True,"
            f" base_url={server.url!r}, config={{'reference_table': {str(table_csv)!r}}})\n"
            "except KeyboardInterrupt as stop:\n"
            "    print('KeyboardInterrupt:', stop)\n"
            "    sys.exit(42)\n"
        )
        results = []
        for command in (
            [sys.executable, "-m", "mirage_reffiles.cli", str(tmp_path / "cli"), *common],
            [sys.executable, "-c", call],
        ):
            before = len(dark_gets(server, rows))
            run = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # fmt: skip
            wait_for(lambda before=before: len(dark_gets(server, rows)) == before + 2, what="both darks requested")
            time.sleep(0.5)
            sent = time.monotonic()
            os.killpg(run.pid, signal.SIGINT)
            out, err = run.communicate(timeout=30)
            results.append((run.returncode, out, err, time.monotonic() - sent))
    (cli_status, _, cli_err, cli_took), (api_status, api_out, api_err, api_took) = results
    assert cli_status == 130 and cli_took <= 2.0
    assert re.match(
        r"mirage-reffiles: Stopped on SIGINT: \d download\(s\) interrupted", cli_err.strip().splitlines()[-1]
    )
    assert api_status == 42 and api_took <= 2.0
    assert re.search(r"KeyboardInterrupt: Stopped on SIGINT: \d download\(s\) interrupted", api_out)
    assert "Traceback" not in cli_err + api_err


def test_ctrl_c_before_any_download_ends_at_once(workdir, mirror):
    # A server that takes the connection and never answers: the run waits in its probe.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        build = subprocess.Popen(command(workdir, url, mirror[2], "fgs_raw"), cwd=workdir, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        ready, _, _ = select.select([silent], [], [], 30)
        assert ready, "the run never asked the server"
        sent = time.monotonic()
        os.killpg(build.pid, signal.SIGINT)
        out, err = build.communicate(timeout=30)
    assert time.monotonic() - sent < 1.0
    assert build.returncode == 130
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1] == "Stopped on SIGINT before any download started."
