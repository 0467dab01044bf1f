"""The cluster profile on a real single-node SLURM cluster (scripts/local_slurm.sh).

Skipped where SLURM is not installed (`scripts/local_slurm.sh install`, as root);
CI installs it. Every run is bounded by `timeout -k`, and the daemons are
stopped at the end.
"""

import importlib.util
import shutil
import subprocess
import sys
import time

import pytest

from conftest import REPO, expected_tree, tree
from mirage_reffiles.sources.mirage import load_table, select, standard_groups
from mirage_reffiles.testing.server import Fault

SETTINGS = {"single_dark": True}  # 2 darks and 2 libraries: four cluster jobs


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("slurmctld") is None:
        pytest.skip("SLURM is not installed here: run scripts/local_slurm.sh install (as root)")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.fail("SLURM is installed but its Snakemake plugin is not: pip install -e '.[dev]'")
    subprocess.run(["timeout", "-k", "10", "180", str(REPO / "scripts/local_slurm.sh"), "up"], check=True)
    yield
    subprocess.run(["timeout", "-k", "10", "120", str(REPO / "scripts/local_slurm.sh"), "down"], check=True)


def submit(snakemake_run, target, config, check=True):
    """`snakemake --profile profiles/slurm TARGET`, bounded in time; returns (result, job comments, states)."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    time.sleep(1)  # sacct's --starttime has one-second resolution
    settings = {"base_url": snakemake_run.base_url, "mirage_data": snakemake_run.mirage_data,
                "reference_table": snakemake_run.table, **config}  # fmt: skip
    command = [
        "timeout", "-k", "30", "400", sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
        "--profile", str(REPO / "profiles/slurm"), target,
        "--slurm-init-seconds-before-status-checks", "2", "--default-resources", "slurm_account=ci",
        "--config", *(f"{key}={value}" for key, value in settings.items()),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=snakemake_run.workdir, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    accounting = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--starttime", started, "-o", "Comment,State"], capture_output=True, text=True
    ).stdout
    jobs = [line.split("|") for line in accounting.splitlines() if line.startswith("rule_")]
    return result, jobs


def rule_of(comment):
    return comment.split("_wildcards_")[0].removeprefix("rule_")


def test_profile_builds_through_sbatch(cluster, snakemake, server, mirror, table, config):
    _, jobs = submit(snakemake, "fgs_raw", SETTINGS)
    rows = select(load_table(mirror[2]), standard_groups()["fgs_raw"], SETTINGS)
    built = tree(snakemake.mirage_data)
    built.pop("mirage_env.sh")
    assert built == expected_tree(mirror[1], rows)
    assert sorted(rule_of(comment) for comment, _ in jobs) == ["extract_tarball"] * 2 + ["fetch_dark"] * 2
    assert {state for _, state in jobs} == {"COMPLETED"}


def test_a_failed_job_is_reported_and_the_next_run_finishes(cluster, snakemake, server, mirror, config):
    rows = select(load_table(mirror[2]), standard_groups()["fgs_raw"], SETTINGS)
    lost = rows[rows.kind == "dark"].iloc[0]
    server.faults[lost.path] = Fault(statuses=[404] * 100)  # however often the job is tried
    result, jobs = submit(snakemake, "fgs_raw", SETTINGS, check=False)
    assert result.returncode != 0
    assert "SLURM status is: 'FAILED'" in result.stderr
    assert "FAILED" in {state for _, state in jobs}
    assert not (snakemake.mirage_data / lost.destination).exists()

    del server.faults[lost.path]  # the file is back
    server.requests.clear()
    submit(snakemake, "fgs_raw", SETTINGS)
    assert [r.path for r in server.gets()] == [lost.path]
    built = tree(snakemake.mirage_data)
    built.pop("mirage_env.sh")
    assert built == expected_tree(mirror[1], rows)


def test_downloads_on_the_submit_host_unpacking_on_the_cluster(cluster, snakemake, server, mirror, config):
    _, jobs = submit(snakemake, "fgs_raw", {**SETTINGS, "downloads_on_submit_host": True})
    rows = select(load_table(mirror[2]), standard_groups()["fgs_raw"], SETTINGS)
    assert sorted(rule_of(comment) for comment, _ in jobs) == ["extract_tarball"] * 2 + ["fetch_dark"] * 2
    (log,) = (snakemake.workdir / ".snakemake/log").glob("*.snakemake.log")  # Snakemake's full log: every job
    assert "localrule download_archive" in log.read_text()  # ran, but as local jobs
    assert sorted(r.path for r in server.gets()) == sorted(rows.path)
    built = tree(snakemake.mirage_data)
    built.pop("mirage_env.sh")
    assert built == expected_tree(mirror[1], rows)
