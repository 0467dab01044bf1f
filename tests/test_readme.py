"""Every command the README shows, run as written.

Each ```bash block runs as one bash script (so an `export` carries to the
lines after it) and each ```python block as one Python program, from a copy of
this checkout, as a user would from a clone. Three things differ from a user's
machine, none of them in the commands: the README's example folder `/data/`
is a scratch folder; `$MIRAGE_REFFILES_BASE_URL`, `$MIRAGE_REFFILES_GRISM_BASE_URL`,
`$MIRAGE_REFFILES_CRDS_URL`, `$MIRAGE_REFFILES_WEBBPSF_URL` and
`$MIRAGE_REFFILES_VEGA_URL` point at local synthetic mirrors and a stand-in
CRDS server instead of STScI's and GitHub (no internet here); and the copy's
tables are pinned to those mirrors. Set-up
lines (pip, conda, sudo) are what CI itself runs, the test command is this
suite, and the cluster profile needs an account on a real cluster
(tests/test_slurm.py runs it on a local one): those are skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from mirage_reffiles.testing.crds_server import serve_crds, write_context
from mirage_reffiles.testing.grism import build_grism_mirror
from mirage_reffiles.testing.server import serve
from mirage_reffiles.testing.simulation import VEGA_PATH, WEBBPSF_PATH, build_simulation_mirror

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", README, re.DOTALL)
#: Lines not run here, and why.
SKIPPED = {
    "pip install": "set-up: .ci/run installs exactly this",
    "conda ": "set-up with conda: no conda channel is reachable here",
    "sudo ": "set-up: .ci/run installs SLURM",
    "python -m pytest": "the test command: this very suite",
    "snakemake --profile profiles/slurm": "needs a SLURM account: tests/test_slurm.py runs the profile",
}


def runnable(code: str) -> str:
    """The block without the lines that are not run here (a continued line goes with its first)."""
    lines, skipping = [], False
    for line in code.splitlines():
        if not skipping and line.strip().startswith(tuple(SKIPPED)):
            skipping = True
        if not skipping:
            lines.append(line)
        if not line.rstrip().endswith("\\"):
            skipping = False
    return "\n".join(lines)


def test_the_readme_has_commands_and_says_what_is_skipped():
    assert len(BLOCKS) >= 8
    assert any("snakemake status" in code for _, code in BLOCKS)
    skipped = [line for _, code in BLOCKS for line in code.splitlines() if line.strip().startswith(tuple(SKIPPED))]
    assert len(skipped) <= 5, skipped


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, mirror):
    """A copy of this checkout whose tables are pinned to the local mirrors (the grism one in its ``github/``)."""
    copy = tmp_path_factory.mktemp("clone") / "mirage-reffiles"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", ".snakemake", "build", "dist", "__pycache__",
                                                               "demo", "mirage_data", "repair"))  # fmt: skip
    shutil.copy(mirror[2], copy / "config/reference_files.csv")
    build_grism_mirror(copy.parent / "github")[0].to_csv(copy / "config/grism_files.csv", index=False)
    build_simulation_mirror(copy.parent / "stsci")
    return copy


def test_every_readme_command_works_as_typed(checkout, mirror, tmp_path):
    scratch = tmp_path / "data"
    context = re.search(r"crds_context=(\S+\.pmap)", README).group(1)
    write_context(tmp_path / "crds_server", context)
    with (
        serve(mirror[0]) as server,
        serve_crds(tmp_path / "crds_server", context=context) as crds_server,
        serve(checkout.parent / "github") as github,
        serve(checkout.parent / "stsci") as stsci,
    ):
        env = {key: value for key, value in os.environ.items() if key not in ("MIRAGE_DATA", "CRDS_PATH")}
        env |= {"MIRAGE_REFFILES_BASE_URL": server.url, "MIRAGE_REFFILES_CRDS_URL": crds_server.url,
                "MIRAGE_REFFILES_GRISM_BASE_URL": github.url,
                "MIRAGE_REFFILES_WEBBPSF_URL": stsci.url + WEBBPSF_PATH,
                "MIRAGE_REFFILES_VEGA_URL": stsci.url + VEGA_PATH,
                "PYTHONPATH": str(checkout / "src")}  # fmt: skip
        for number, (language, code) in enumerate(BLOCKS):
            script = runnable(code).replace("/data/", f"{scratch}/")
            if not script.strip():
                continue
            if language == "bash":
                command = ["bash", "-euo", "pipefail", "-c", script]
            else:
                command = [sys.executable, "-c", script]
            block = subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)  # fmt: skip
            try:
                out, err = block.communicate(timeout=600)
            finally:  # a server a block started in the background ends with it, whatever happened
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(block.pid, signal.SIGTERM)
            result = subprocess.CompletedProcess(command, block.returncode, out, err)
            assert result.returncode == 0, (
                f"README block {number}:\n{code}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"
            )
            assert "Traceback" not in result.stderr, f"README block {number}:\n{result.stderr[-3000:]}"
    # The commands built real trees: the main one, and the command's and the Python call's.
    assert (scratch / "mirage_data/mirage_env.sh").is_file()
    assert (scratch / "mirage/mirage_data/mirage_env.sh").is_file()
    assert Path(checkout / "status.csv").is_file()
    assert (checkout / "mirage_data/niriss/GRISM_NIRISS/current").is_dir()  # the grism commands, in the checkout
    assert "WEBBPSF_PATH" in (scratch / "mirage_data/mirage_env.sh").read_text()  # the offline nodes' one command
