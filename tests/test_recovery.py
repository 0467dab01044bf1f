"""Killed runs and full disks, through the real `snakemake` command line.

After each fault, every reference file under its final name is complete and
byte-exact, and a plain second run finishes the job without anyone deleting
anything by hand.
"""

import contextlib
import gzip
import io
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import REPO, TABLE_CSV, Snakemake, expected_tree, tree
from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.testing.mirror import build_mirror, synthetic_bytes
from mirage_reffiles.testing.server import serve
from mirage_reffiles.tree import layout


class _Any:
    """Equal to anything: for files whose content the test does not pin (mirage_env.sh)."""

    def __eq__(self, other):
        return True


ANY = _Any()


def subset_table(tmp_path, file_ids, size=None):
    """A table of a few rows, written to CSV; with ``size``, also a mirror of them
    (of that dark size) and the table pinned to it. Returns (csv, rows, expected files)."""
    rows = load_table(TABLE_CSV).loc[file_ids]
    expected = None
    if size:
        rows, expected = build_mirror(tmp_path / "mirror", rows, size=size)
    path = tmp_path / "table.csv"
    rows.to_csv(path, index=False)
    return path, rows, expected


def subset_config(table_csv):
    """Config for a run over a subset table (the shipped groups still validate against the schema)."""
    return {"reference_table": table_csv, "instrument": "fgs", "dark_type": "raw"}


def start(run: Snakemake, table_csv):
    """Start `snakemake all` in its own process group, to be killed."""
    settings = {"base_url": run.base_url, "mirage_data": run.mirage_data, **subset_config(table_csv)}
    command = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "4", "all",
        "--config", *(f"{key}={value}" for key, value in settings.items()),
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=run.workdir, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def kill_when(process, condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before the moment to kill it:\n{process.stderr.read()}"
        assert time.monotonic() < deadline, "the moment to kill the run never came"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def assert_only_complete_files(mirage_data, expected):
    """Whatever is under a final name is byte-exact."""
    for path, data in tree(mirage_data).items():
        if path != layout.ENV_FILE and not path.endswith(".part"):  # .part: a temporary name
            assert expected[path] == data, f"{path} is not what the server has"


def test_killed_mid_download_resumes(workdir, tmp_path):
    darks = ["fgs_raw_guider2_1", "fgs_raw_guider2_2", "fgs_raw_guider1_1"]
    table_csv, rows, expected = subset_table(tmp_path, darks, size=600_000)
    with serve(tmp_path / "mirror", rate=150_000) as server:
        run = Snakemake(workdir, server.url)
        downloads = run.mirage_data / layout.STATE_DIR / "downloads"
        process = start(run, table_csv)
        kill_when(process, lambda: any(p.stat().st_size > 100_000 for p in downloads.glob("*.part")))
        assert_only_complete_files(run.mirage_data, expected_tree(expected, rows))
        partial = {p.name: p.stat().st_size for p in downloads.glob("*.part")}
        server.requests.clear()
        run("all", config=subset_config(table_csv))
    assert tree(run.mirage_data) == expected_tree(expected, rows) | {layout.ENV_FILE: ANY}
    ranges = {}
    for request in server.gets():
        ranges.setdefault(request.path, []).append(request.range)
    assert any(r for each in ranges.values() for r in each), "no download was resumed"
    for row in rows.itertuples():
        if kept := partial.get(f"{row.file_id}.gz.part"):
            # The file's own connection goes on from what was kept (helpers may fetch later segments).
            assert f"bytes={kept}-" in ranges[row.path], ranges[row.path]
            assert None not in ranges[row.path] and "bytes=0-" not in ranges[row.path]
    assert list(downloads.glob("*")) == []


def test_killed_mid_unpack_starts_the_unpacking_again(workdir, tmp_path):
    table_csv, rows, _ = subset_table(tmp_path, ["mirage_fgs_cr_library"])
    members = {f"mirage_data/fgs/cosmic_ray_library/cr_{n:04}.fits": synthetic_bytes(str(n), 2048) for n in range(4000)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "mirror" / rows.path.iloc[0]
    archive.parent.mkdir(parents=True)
    archive.write_bytes(buffer.getvalue())
    expected = {name.removeprefix("mirage_data/"): data for name, data in members.items()}
    with serve(tmp_path / "mirror") as server:
        run = Snakemake(workdir, server.url)
        staging = layout.staging_dir(run.mirage_data, "mirage_fgs_cr_library")
        process = start(run, table_csv)
        kill_when(process, lambda: staging.is_dir() and any(staging.rglob("cr_00*.fits")))
        assert not layout.record_path(run.mirage_data, "mirage_fgs_cr_library").exists()
        assert_only_complete_files(run.mirage_data, expected)
        server.requests.clear()
        run("all", config=subset_config(table_csv))
    assert tree(run.mirage_data) == expected | {layout.ENV_FILE: ANY}
    assert not staging.exists()
    assert [r.status for r in server.gets()] in ([416], [])  # complete download kept: nothing fetched again


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (run as root): {result.stderr.decode()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_build_that_cannot_fit_does_not_start(workdir, tmp_path, small_disk):
    table_csv, rows, _ = subset_table(tmp_path, ["fgs_raw_guider2_1", "fgs_raw_guider1_1"], size=1_500_000)
    with serve(tmp_path / "mirror") as server:
        run = Snakemake(workdir, server.url)
        run.mirage_data = small_disk / "mirage_data"
        result = run("all", config=subset_config(table_csv), check=False)
    assert result.returncode != 0
    needed = sum(map(int, rows.unpacked_bytes)) + sum(map(int, rows.size_bytes))
    assert f"not starting all: it needs {needed / 1e6:,.2f} MB ({needed:,} bytes) but {run.mirage_data} has" in (
        result.stderr
    )
    assert "short" in result.stderr and "ignore_free_space=true" in result.stderr
    assert server.requests == []


@pytest.mark.parametrize(
    ("make_dark", "message"),
    [
        (lambda: synthetic_bytes("big", 3_000_000), "not enough free space for fgs_raw_guider2_1"),  # at the headers
        (lambda: bytes(1_800_000), "disk full while writing fgs/darks/raw/"),  # passes that check, then fills the disk
    ],
    ids=["checked-before-the-body", "disk-fills-while-unpacking"],
)
def test_a_full_disk_gives_a_clear_error_and_no_half_files(workdir, tmp_path, small_disk, make_dark, message):
    table_csv, rows, _ = subset_table(tmp_path, ["fgs_raw_guider2_1"])
    (tmp_path / "mirror" / rows.path.iloc[0]).parent.mkdir(parents=True)
    (tmp_path / "mirror" / rows.path.iloc[0]).write_bytes(gzip.compress(make_dark()))
    with serve(tmp_path / "mirror") as server:
        run = Snakemake(workdir, server.url)
        run.mirage_data = small_disk / "mirage_data"
        result = run("all", config={**subset_config(table_csv), "ignore_free_space": True}, check=False)
    assert result.returncode != 0
    log = (run.mirage_data / layout.STATE_DIR / "logs" / f"{rows.destination.iloc[0]}.log").read_text()
    assert message in log
    assert not (run.mirage_data / rows.destination.iloc[0]).exists()
    assert not layout.temporary_path(run.mirage_data / rows.destination.iloc[0]).exists()


def test_a_disk_already_full_is_named_and_the_job_log_does_not_fail_first(workdir, tmp_path, small_disk):
    table_csv, rows, _ = subset_table(tmp_path, ["fgs_raw_guider2_1"])
    (tmp_path / "mirror" / rows.path.iloc[0]).parent.mkdir(parents=True)
    (tmp_path / "mirror" / rows.path.iloc[0]).write_bytes(gzip.compress(synthetic_bytes("dark", 50_000)))
    run = Snakemake(workdir, "unused")
    run.mirage_data = small_disk / "mirage_data"
    (run.mirage_data / layout.STATE_DIR / "logs").mkdir(parents=True)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):  # fill the disk to the last byte
        while True:
            handle.write(bytes(4096))

    with serve(tmp_path / "mirror") as server:
        run.base_url = server.url
        result = run("all", config={**subset_config(table_csv), "ignore_free_space": True}, check=False)
    assert result.returncode != 0, result.stderr
    assert "disk full while writing" in result.stderr or "not enough free space" in result.stderr
    assert "[Errno 28]" not in result.stderr
    assert not (run.mirage_data / rows.destination.iloc[0]).exists()
