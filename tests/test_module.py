"""This workflow as a Snakemake module of another: the host (tests/module_host/Snakefile)
passes a few settings, builds a group and a single file by path, and its own rules still run."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import REPO, expected_tree, fgs_raw_single, tree
from mirage_reffiles.testing.server import serve


def test_a_host_workflow_builds_a_group_and_a_file_by_path(tmp_path, mirror, table):
    root, expected, table_csv = mirror
    pinned = table  # the mirror's pinned table has the same rows
    dark = pinned[(pinned.kind == "dark") & (pinned.instrument == "niriss")].iloc[0]
    mirage_data = tmp_path / "reference files"
    with serve(root) as server:
        host = {
            "mirage_snakefile": str(REPO / "Snakefile"),
            # Only some keys: the module's defaults fill in the rest.
            "mirage": {"mirage_data": str(mirage_data), "base_url": server.url, "reference_table": str(table_csv),
                       "single_dark": True},
            "dark": str(mirage_data / dark.destination),
        }  # fmt: skip
        (tmp_path / "host.yaml").write_text(yaml.safe_dump(host))
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "-s", str(REPO / "tests/module_host/Snakefile"), "--cores", "4",
             "all", "mirage_fgs_raw"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "rule measure_dark" in result.stderr  # the host's messages are its own: nothing left out
    rows = fgs_raw_single(pinned[pinned.instrument == "fgs"])
    files = tree(mirage_data)
    files.pop("mirage_env.sh", None)
    assert files == expected_tree(expected, rows) | expected[dark.file_id]
    assert (tmp_path / "dark_size.txt").read_text().strip() == str(len(expected[dark.file_id][dark.destination]))
    assert sorted(r.path for r in server.gets()) == sorted([*rows.path, dark.path])
