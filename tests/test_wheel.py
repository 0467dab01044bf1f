"""Installed like any tool: the wheel built from this repository, in a fresh virtual
environment outside the checkout, runs the command, the Python call, the demo and
the test mirror, from a folder that is not the checkout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, expected_tree, tree
from mirage_reffiles.testing.mirror import build_mirror

WORKFLOW_FILES = ("Snakefile", "rules/common.smk", "rules/fetch.smk", "rules/report.smk", "config/config.yaml",
                  "config/reference_files.csv", "config/schemas/config.schema.yaml", "config/README.md",
                  "profiles/default/config.yaml", "profiles/slurm/config.yaml")  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: building leaves a build/ folder behind
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "dist", "__pycache__", "*.egg-info",
                                                                "demo", "mirage_data", "repair"))  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)], check=True)
    (built,) = out.glob("mirage_reffiles-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A new virtual environment with the wheel (and its dependencies) installed: its bin/ folder."""
    env = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # nothing of the checkout
    subprocess.run([str(env / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(wheel)], check=True, env=clean)  # fmt: skip
    return env / "bin"


def test_the_wheel_carries_the_workflow_once(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for name in WORKFLOW_FILES:
        assert names.count(f"mirage_reffiles/workflow/{name}") == 1, name
    assert sum(name.endswith("Snakefile") for name in names) == 1
    assert any(name.endswith("licenses/LICENSE") for name in names)
    assert not any("/tests/" in name or name.startswith("tests/") for name in names)


def run(bin_dir: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MIRAGE_DATA")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_installed_tools_work_from_any_folder(venv, tmp_path, table):
    table_rows = table
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    python = str(venv / "python")
    where = run(venv, python, "-c", "import mirage_reffiles.tree.layout as l; print(l.WORKFLOW_DIR)", cwd=outside)
    assert "site-packages" in where.stdout and str(REPO) not in where.stdout
    assert run(venv, "mirage-reffiles", "--version", cwd=outside).stdout.startswith("mirage-reffiles ")
    run(venv, python, "-m", "mirage_reffiles.mirror", "--help", cwd=outside)
    run(venv, python, "-m", "mirage_reffiles.server", "--help", cwd=outside)
    # The test mirror, built and served by the installed package.
    run(venv, python, "-m", "mirage_reffiles.mirror", str(outside / "mirror"), "--instrument", "fgs", cwd=outside)
    server = subprocess.Popen([python, "-m", "mirage_reffiles.server", str(outside / "mirror"), "--port", "0"],
                              stdout=subprocess.PIPE, text=True, cwd=outside)  # fmt: skip
    try:
        url = server.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:")
        table = outside / "mirror/pinned_table.csv"
        run(venv, "mirage-reffiles", str(outside / "cli"), "--instrument", "fgs", "--single-dark", "--base-url", url,
            "--config", f"reference_table={table}", cwd=outside)  # fmt: skip
        run(venv, python, "-c", "import sys; from mirage_reffiles import download_reffiles; "
            f"download_reffiles({str(outside / 'api')!r}, instrument='fgs', single_dark=True, base_url={url!r}, "
            f"config={{'reference_table': {str(table)!r}}})", cwd=outside)  # fmt: skip
        run(venv, python, "-m", "mirage_reffiles.sizes", "--base-url", url, "--table", str(table), "--output",
            str(outside / "sized.csv"), cwd=outside)  # fmt: skip
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=10)
    # Byte for byte what the same mirror, built here from the checkout, says each file holds.
    rows = table_rows[table_rows.instrument == "fgs"]
    _, expected = build_mirror(tmp_path / "same_mirror", rows)
    wanted = expected_tree(expected, rows[(rows.kind != "dark") | ((rows.single_dark == "true")
                                                                     & (rows.dark_type == "linearized"))])  # fmt: skip
    for folder in ("cli", "api"):
        files = tree(outside / folder / "mirage_data")
        files.pop("mirage_env.sh")
        assert files == wanted, folder
    demo = run(venv, python, "-m", "mirage_reffiles.demo", "fgs_raw", "--dir", str(outside / "demo"), cwd=outside)
    assert "synthetic" in demo.stdout and "0 for the run after it" in demo.stdout
