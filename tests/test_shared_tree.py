"""Runs that share a tree: two terminals (two working directories) building the same
MIRAGE_DATA at once end with every file present, byte-exact, and fetched once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

from conftest import REPO, SLOW, fgs_raw_single, tree
from mirage_reffiles.testing.server import serve


def build(workdir, mirage_data, base_url, table, cores):
    """One terminal's build; one connection per file (segment_mb=0), so the server's count of
    requests per file says how many times it was fetched."""
    workdir.mkdir()
    return subprocess.Popen(
        [
            sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "fgs_raw", "--cores", str(cores),
            "--config",
            f"base_url={base_url}", f"mirage_data={mirage_data}", f"reference_table={table}", "single_dark=true",
            "segment_mb=0",
        ],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_runs_a_second_apart_share_one_tree(tmp_path, slow_mirror):
    root, expected, table_csv, pinned = slow_mirror
    rows = fgs_raw_single(pinned)
    mirage_data = tmp_path / "mirage_data"
    with serve(root, rate=SLOW) as server:
        first = build(tmp_path / "terminal1", mirage_data, server.url, table_csv, cores=8)
        time.sleep(1)
        # One job at a time: its later jobs start after the first run finished their files.
        second = build(tmp_path / "terminal2", mirage_data, server.url, table_csv, cores=1)
        results = [run.communicate(timeout=180) for run in (first, second)]
    for run, (_, err) in zip((first, second), results, strict=True):
        assert run.returncode == 0, err[-3000:]
    gets = Counter(r.path for r in server.requests if r.method == "GET")
    assert gets == Counter(set(rows.path)), "each file fetched exactly once"
    wanted = {}
    for row in rows.itertuples():
        wanted.update(expected[row.file_id])
    files = tree(mirage_data)
    files.pop("mirage_env.sh")
    assert files == wanted
    # The environment file was written by both, whole.
    assert (mirage_data / "mirage_env.sh").read_text().count("export MIRAGE_DATA=") == 1
