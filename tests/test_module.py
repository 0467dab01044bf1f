"""This workflow as a Snakemake module of another: the host (tests/module_host/Snakefile)
passes a few settings, builds a group and a single file by path, and its own rules still run."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import REPO, expected_tree, fgs_raw_single, tree
from mirage_reffiles.testing.grism import REPOSITORIES, build_grism_mirror
from mirage_reffiles.testing.server import serve
from mirage_reffiles.tree.layout import grism_folder


def test_a_host_workflow_builds_a_group_and_files_by_path(tmp_path, mirror, table):
    root, expected, table_csv = mirror
    pinned = table  # the mirror's pinned table has the same rows
    dark = pinned[(pinned.kind == "dark") & (pinned.instrument == "niriss")].iloc[0]
    library = pinned.loc["mirage_niriss_cr_library"]  # alone in its folder
    member = sorted(expected[library.file_id])[0]
    grism_table, grism_files = build_grism_mirror(tmp_path / "github")
    grism_table.to_csv(tmp_path / "grism_files.csv", index=False)
    grism_name, grism_bytes = sorted(grism_files["niriss"][REPOSITORIES["niriss"][1][-1]].items())[0]
    mirage_data = tmp_path / "reference files"
    with serve(root) as server, serve(tmp_path / "github") as github:
        host = {
            "mirage_snakefile": str(REPO / "Snakefile"),
            # Only some keys: the module's defaults fill in the rest.
            "mirage": {"mirage_data": str(mirage_data), "base_url": server.url, "reference_table": str(table_csv),
                       "single_dark": True, "grism_base_url": github.url,
                       "grism_table": str(tmp_path / "grism_files.csv")},
            "dark": str(mirage_data / dark.destination),
            "member": str(mirage_data / member),
            "grism_file": str(mirage_data / grism_folder("niriss") / grism_name),
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
    grism = {f"{grism_folder('niriss')}/{name}": data for name, data in grism_files["niriss"][
        REPOSITORIES["niriss"][1][-1]].items()}  # fmt: skip
    assert files == expected_tree(expected, rows) | expected[dark.file_id] | expected[library.file_id] | grism
    assert (tmp_path / "dark_size.txt").read_text().strip() == str(len(expected[dark.file_id][dark.destination]))
    sizes = (tmp_path / "member_size.txt").read_text()
    assert f"{len(expected[library.file_id][member])} {mirage_data / member}" in sizes
    assert f"{len(grism_bytes)} {mirage_data / grism_folder('niriss') / grism_name}" in sizes
    assert sorted(r.path for r in server.gets()) == sorted([*rows.path, dark.path, library.path])
