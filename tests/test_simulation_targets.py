"""The targets webbpsf, vega and simulation through the real `snakemake` command line, against stand-in
servers on 127.0.0.1; then what they built read by the real webbpsf and synphot in a fresh shell that
has only sourced mirage_env.sh (these machines have no internet: a miss fails for real)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import REPO, Snakemake
from mirage_reffiles.sources import vega, webbpsf
from mirage_reffiles.testing.crds_server import serve_crds, write_context
from mirage_reffiles.testing.grism import build_grism_mirror
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.testing.simulation import VEGA_PATH, WEBBPSF_PATH, build_simulation_mirror, write_webbpsf_tarball
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.records import read_record

CONTEXT = "jwst_0001.pmap"


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "stsci"
    files = build_simulation_mirror(root)
    with serve(root) as server:
        server.files = files
        yield server


@pytest.fixture
def run(workdir, server, mirror, site):
    """The CLI, WebbPSF's data and the Vega spectrum from `site`."""
    snakemake = Snakemake(workdir, server.url, mirror[2])

    def call(*args, config=None, **kwargs):
        settings = {"webbpsf_url": site.url + WEBBPSF_PATH, "vega_url": site.url + VEGA_PATH, **(config or {})}
        return snakemake(*args, config=settings, **kwargs)

    call.mirage_data = snakemake.mirage_data
    call.workdir = workdir
    return call


def in_fresh_shell(env_file, code: str, home) -> subprocess.CompletedProcess:
    """``code`` in Python, in a shell whose environment is PATH, a home of its own, and ``env_file`` sourced."""
    home.mkdir(exist_ok=True)
    script = f'. "{env_file}" && exec python -c "$CODE"'
    environment = {"PATH": os.environ["PATH"], "HOME": str(home), "CODE": code}
    return subprocess.run(["bash", "-c", script], env=environment, capture_output=True, text=True, timeout=120)


WEBBPSF_FINDS = """
import json, webbpsf, webbpsf.utils as u
print(json.dumps(u.get_webbpsf_data_path(webbpsf.DATA_VERSION_MIN, return_version=True)))
"""

FROM_VEGA = f"""
from synphot import SourceSpectrum, config as syn_conf
with syn_conf.conf.set_temp("vega_file", {vega.MIRAGE_VEGA_URL!r}):
    print(SourceSpectrum.from_vega()(5000).value)
"""


def vega_flux_served(site) -> float:
    from synphot import SourceSpectrum

    return SourceSpectrum.from_file(str(site.root / VEGA_PATH))(5000).value


def test_webbpsf_and_vega_are_read_with_only_the_env_file(run, site, tmp_path):
    result = run("webbpsf", "vega")
    folder = run.mirage_data / "webbpsf-data"
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == set(site.files["webbpsf"])
    assert read_record(run.mirage_data, webbpsf.WEBBPSF_FILE_ID).version == "1.5.0"
    assert f"WEBBPSF_PATH={folder}" in result.stdout
    env_file = run.mirage_data / "mirage_env.sh"
    found = in_fresh_shell(env_file, WEBBPSF_FINDS, tmp_path / "home")
    assert found.returncode == 0, found.stderr[-2000:]
    assert json.loads(found.stdout.splitlines()[-1]) == [str(folder), "1.5.0"]
    spectrum = in_fresh_shell(env_file, FROM_VEGA, tmp_path / "home")
    assert spectrum.returncode == 0, spectrum.stderr[-2000:]
    assert float(spectrum.stdout.splitlines()[-1]) == pytest.approx(vega_flux_served(site))
    assert not (tmp_path / "home" / "data").exists()  # webbpsf fetched nothing of its own

    # Both are in the reports, and a damaged file of each is found and fetched again.
    status = run("status").stdout
    assert "webbpsf" in status and "vega" in status
    (folder / "NIRCam/filters/F200W_throughput.fits").write_bytes(b"SIMPLE  = T")
    (cached := next((run.mirage_data / "astropy-cache").rglob("contents"))).write_bytes(b"junk")
    damaged = run("verify", check=False)
    report = damaged.stdout + damaged.stderr
    assert damaged.returncode != 0 and "DAMAGED webbpsf_data" in report and "DAMAGED vega" in report
    site.requests.clear()
    run("repair")
    assert (folder / "NIRCam/filters/F200W_throughput.fits").read_bytes() == site.files["webbpsf"][
        "NIRCam/filters/F200W_throughput.fits"
    ]
    assert cached.read_bytes() == site.files["vega"]
    assert sorted(r.path for r in site.gets()) == sorted([VEGA_PATH, WEBBPSF_PATH])
    run("verify")


def test_data_below_the_installed_minimum_is_refused_before_anything_takes_its_place(run, site):
    write_webbpsf_tarball(site.root / WEBBPSF_PATH, version="1.4.0")
    result = run("webbpsf", check=False)
    assert result.returncode == 1
    reader = webbpsf.installed_reader()
    message = result.stdout + result.stderr
    assert "WebbPSF data version 1.4.0" in message and f"{reader.package} {reader.version} needs 1.5.0" in message
    assert "set webbpsf_url" in message and "Traceback" not in message
    assert not (run.mirage_data / "webbpsf-data").exists()
    assert read_record(run.mirage_data, webbpsf.WEBBPSF_FILE_ID) is None


def test_data_made_outdated_by_an_upgrade_of_webbpsf_is_fetched_again(run, site):
    run("webbpsf")
    record = layout.record_path(run.mirage_data, webbpsf.WEBBPSF_FILE_ID)
    record.write_text(record.read_text().replace('"version": "1.5.0"', '"version": "1.4.0"'))  # as if built earlier
    site.requests.clear()
    result = run("webbpsf")
    assert "WebbPSF data version 1.4.0" in result.stdout and "to be fetched again" in result.stdout
    assert [r.path for r in site.gets()] == [WEBBPSF_PATH]
    assert read_record(run.mirage_data, webbpsf.WEBBPSF_FILE_ID).version == "1.5.0"


def test_a_folder_that_holds_mirage_data_is_refused(run):
    result = run("webbpsf", config={"webbpsf_path": run.mirage_data}, check=False)
    assert result.returncode != 0 and "setting 'webbpsf_path'" in result.stderr and "Traceback" not in result.stderr
    assert not run.mirage_data.exists()


def test_a_dropped_download_of_the_data_resumes(run, site):
    size = (site.root / WEBBPSF_PATH).stat().st_size
    site.faults[WEBBPSF_PATH] = Fault(drop_after=size // 2)
    run("webbpsf", config={"retries": 3})
    assert [r.range for r in site.gets()] == [None, f"bytes={size // 2}-"]
    assert (run.mirage_data / "webbpsf-data/version.txt").read_text() == "1.5.0\n"


def test_without_astropy_the_vega_target_is_refused(run, tmp_path, monkeypatch):
    hide = tmp_path / "no_astropy"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['astropy'] = None  # as if not installed\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")])))
    result = run("vega", check=False)
    assert result.returncode != 0
    assert "astropy is not installed" in result.stderr and "Traceback" not in result.stderr
    assert not (run.mirage_data / "astropy-cache").exists()


@pytest.fixture
def stand_ins(tmp_path, server, site):
    """GitHub's grism archives and a CRDS server, beside the mirror and STScI's `site`."""
    table, _ = build_grism_mirror(tmp_path / "github")
    grism_table = tmp_path / "grism_files.csv"
    table.to_csv(grism_table, index=False)
    crds_root = tmp_path / "crds_server"
    write_context(crds_root, CONTEXT, reference_size=20_000)
    with serve(tmp_path / "github") as github, serve_crds(crds_root, CONTEXT) as crds_server:
        yield {
            "servers": [server, site, github, crds_server],
            "config": {
                "grism_base_url": github.url,
                "grism_table": grism_table,
                "crds_server_url": crds_server.url,
                "crds_context": CONTEXT,
                "crds_modes": REPO / "config/crds_modes.csv",
                "crds_path": tmp_path / "crds_cache",
            },
            "crds_path": tmp_path / "crds_cache",
        }


def test_one_target_fills_everything_a_simulation_reads_and_a_second_run_asks_nothing(run, stand_ins, tmp_path):
    settings = {"instrument": "niriss", "single_dark": "true", **stand_ins["config"]}
    result = run("simulation", config=settings)
    mirage_data = run.mirage_data
    assert (mirage_data / "niriss/GRISM_NIRISS/current").is_dir()
    assert any((mirage_data / "niriss/darks/linearized").glob("*.fits"))
    references = list((stand_ins["crds_path"] / "references/jwst").rglob("*"))
    assert {p.parent.name for p in references if p.is_file()} == {"niriss"}
    assert (mirage_data / "webbpsf-data/version.txt").is_file()
    variables = (mirage_data / "mirage_env.sh").read_text()
    for name in ("MIRAGE_DATA", "CRDS_PATH", "CRDS_CONTEXT", "WEBBPSF_PATH", "ASTROPY_CACHE_DIR"):
        assert f"export {name}=" in variables, name
    assert "Point Mirage at them" in result.stdout

    for server in stand_ins["servers"]:
        server.requests.clear()
    second = run("simulation", config=settings)
    assert all(server.requests == [] for server in stand_ins["servers"])
    assert "to fetch: 0 files" in second.stdout
    # The compute node: one `source`, no server at all.
    for server in stand_ins["servers"]:
        server.shutdown()
    spectrum = in_fresh_shell(mirage_data / "mirage_env.sh", FROM_VEGA, tmp_path / "home")
    assert spectrum.returncode == 0, spectrum.stderr[-2000:]


def test_the_command_and_download_reffiles_take_both_sources(tmp_path, server, site):
    command = ["mirage-reffiles", str(tmp_path), "--instrument", "fgs", "--skip-darks", "--base-url", server.url,
               "--webbpsf", "--vega", "--config", f"webbpsf_url={site.url}{WEBBPSF_PATH}",
               "--config", f"vega_url={site.url}{VEGA_PATH}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    mirage_data = tmp_path / "mirage_data"
    assert f"export WEBBPSF_PATH={mirage_data / 'webbpsf-data'}" in result.stdout
    assert f"export ASTROPY_CACHE_DIR={mirage_data / 'astropy-cache'}" in result.stdout
    assert sorted(r.path for r in site.gets()) == sorted([VEGA_PATH, WEBBPSF_PATH])
