"""WebbPSF's data and the Vega spectrum as sources: served by a real local server, read back by the
real webbpsf, stpsf and synphot in fresh processes that have only the environment this build writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml

from conftest import REPO
from mirage_reffiles.adapters.envfile import simulation_environment
from mirage_reffiles.adapters.settings import check_config
from mirage_reffiles.errors import Outdated, UnpackError, VerifyError
from mirage_reffiles.sources import vega, webbpsf
from mirage_reffiles.sources.catalog import Catalog
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.testing.simulation import (
    STPSF_PATH,
    VEGA_PATH,
    WEBBPSF_PATH,
    build_simulation_mirror,
    write_webbpsf_tarball,
)
from mirage_reffiles.transfer.http import RetryPolicy
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.records import read_record

FAST = RetryPolicy(retries=3, backoff=0.01, connect_timeout=5, read_timeout=5)
WEBBPSF = webbpsf.installed_reader()


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "server"
    files = build_simulation_mirror(root)
    with serve(root) as server:
        server.files = files
        yield server


def isolated(environment: dict[str, str], home) -> dict[str, str]:
    """What a fresh shell on a node has: this Python's search path, a home of its own, and ``environment``."""
    keep = {name: os.environ[name] for name in ("PATH", "PYTHONPATH", "LANG") if name in os.environ}
    return {**keep, "HOME": str(home), **environment}


def run_python(code: str, environment: dict[str, str], home) -> subprocess.CompletedProcess:
    home.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-c", code], env=isolated(environment, home), capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_the_reader_is_found_without_importing_it(tmp_path):
    assert WEBBPSF is not None and WEBBPSF.package == "webbpsf"
    import webbpsf as installed

    assert WEBBPSF.data_version_min == installed.DATA_VERSION_MIN and WEBBPSF.version == installed.__version__
    # webbpsf 2 is an alias of stpsf and sets no minimum of its own: stpsf reads the data.
    alias = tmp_path / "site" / "webbpsf"
    alias.mkdir(parents=True)
    (alias / "__init__.py").write_text("import os, sys, stpsf\nsys.modules['webbpsf'] = stpsf\n")
    reader = webbpsf.installed_reader([str(tmp_path / "site"), *sys.path])
    import stpsf

    assert (reader.package, reader.data_version_min, reader.latest_url) == (
        "stpsf",
        stpsf.DATA_VERSION_MIN,
        webbpsf.STPSF_LATEST_URL,
    )
    assert webbpsf.installed_reader([str(tmp_path / "empty")]) is None
    assert webbpsf.default_url(None) == webbpsf.WEBBPSF_LATEST_URL


def fetch_data(site, root, path=WEBBPSF_PATH, reader=WEBBPSF, folder="webbpsf-data"):
    request = webbpsf.WebbpsfRequest(site.url + path, root, folder, reader=reader, policy=FAST)
    return webbpsf.fetch_webbpsf(request)


def folder_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_webbpsf_reads_the_built_folder_with_its_own_version_check(site, tmp_path):
    root = tmp_path / "mirage_data"
    record_path = fetch_data(site, root)
    assert folder_files(root / "webbpsf-data") == site.files["webbpsf"]
    record = read_record(root, webbpsf.WEBBPSF_FILE_ID)
    assert record_path == layout.record_path(root, webbpsf.WEBBPSF_FILE_ID) and record.version == "1.5.0"
    assert {item.path for item in record.files} == {f"webbpsf-data/{name}" for name in site.files["webbpsf"]}
    code = (
        "import json, webbpsf, webbpsf.utils as u\n"
        "print(json.dumps(u.get_webbpsf_data_path(webbpsf.DATA_VERSION_MIN, return_version=True)))"
    )
    result = run_python(code, simulation_environment(root / "webbpsf-data"), tmp_path / "home")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == [str(root / "webbpsf-data"), "1.5.0"]
    assert not (tmp_path / "home" / "data").exists()  # webbpsf downloaded nothing of its own


def test_stpsf_reads_its_data_through_stpsf_path(site, tmp_path):
    import stpsf

    reader = webbpsf.Reader("stpsf", stpsf.__version__, stpsf.DATA_VERSION_MIN, webbpsf.STPSF_LATEST_URL)
    root = tmp_path / "mirage_data"
    fetch_data(site, root, STPSF_PATH, reader)  # its members sit under stpsf-data/; the folder is the setting's
    assert folder_files(root / "webbpsf-data") == site.files["stpsf"]
    environment = simulation_environment(root / "webbpsf-data", stpsf=True)
    assert environment == {"WEBBPSF_PATH": str(root / "webbpsf-data"), "STPSF_PATH": str(root / "webbpsf-data")}
    code = "import stpsf, stpsf.utils as u\nprint(u.get_stpsf_data_path(stpsf.DATA_VERSION_MIN, return_version=True))"
    result = run_python(code, environment, tmp_path / "home")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'2.1.0'" in result.stdout.splitlines()[-1]


def test_data_older_than_the_installed_minimum_is_refused_before_anything_moves(site, tmp_path):
    write_webbpsf_tarball(site.root / WEBBPSF_PATH, version="1.4.0")
    root = tmp_path / "mirage_data"
    with pytest.raises(Outdated) as refused:
        fetch_data(site, root)
    message = str(refused.value)
    assert "version 1.4.0" in message and f"webbpsf {WEBBPSF.version} needs 1.5.0" in message
    assert "webbpsf_url" in message
    assert not (root / "webbpsf-data").exists() and read_record(root, webbpsf.WEBBPSF_FILE_ID) is None
    assert not layout.partial_download_path(root, webbpsf.WEBBPSF_FILE_ID, "tar.gz").exists()
    assert len(site.gets()) == 1  # the same bytes would come again: not fetched twice


def test_a_tarball_without_a_version_is_not_webbpsf_data(site, tmp_path):
    (site.root / WEBBPSF_PATH).write_bytes((site.root / VEGA_PATH).read_bytes())  # not even a tarball
    with pytest.raises(UnpackError, match="corrupt"):
        fetch_data(site, tmp_path / "mirage_data")

    with tarfile.open(site.root / WEBBPSF_PATH, "w:gz") as tar:
        tar.add(site.root / VEGA_PATH, "webbpsf-data/spectrum.fits")
    with pytest.raises(VerifyError, match=r"no version\.txt"):
        fetch_data(site, tmp_path / "mirage_data")
    assert not (tmp_path / "mirage_data" / "webbpsf-data").exists()


def test_a_drop_mid_download_resumes(site, tmp_path):
    size = (site.root / WEBBPSF_PATH).stat().st_size
    site.faults[WEBBPSF_PATH] = Fault(drop_after=size // 2)
    root = tmp_path / "mirage_data"
    fetch_data(site, root)
    first, second = site.gets()
    assert first.range is None and second.range == f"bytes={size // 2}-" and second.status == 206
    assert folder_files(root / "webbpsf-data") == site.files["webbpsf"]


def fetch_spectrum(site, root, key=vega.MIRAGE_VEGA_URL):
    request = vega.VegaRequest(site.url + VEGA_PATH, root, "astropy-cache", key=key, policy=FAST)
    return vega.fetch_vega(request)


FROM_VEGA = f"""
from synphot import SourceSpectrum, config as syn_conf
with syn_conf.conf.set_temp("vega_file", {vega.MIRAGE_VEGA_URL!r}):
    spectrum = SourceSpectrum.from_vega()
print(spectrum(5000).value)
"""


def test_synphot_finds_vega_in_the_cache_with_no_network(site, tmp_path):
    root = tmp_path / "mirage_data"
    fetch_spectrum(site, root)
    record = read_record(root, vega.VEGA_FILE_ID)
    assert record.size == len(site.files["vega"])
    assert all(item.path.startswith("astropy-cache/") for item in record.files)
    # Mirage's URL is on a host this machine cannot reach: a miss would fail.
    result = run_python(FROM_VEGA, simulation_environment(astropy_cache=root / "astropy-cache"), tmp_path / "home")
    assert result.returncode == 0, result.stderr[-2000:]
    from synphot import SourceSpectrum

    served = SourceSpectrum.from_file(str(site.root / VEGA_PATH))
    assert float(result.stdout.splitlines()[-1]) == pytest.approx(served(5000).value)
    # Without the variable, the user's own cache does not have it.
    result = run_python(FROM_VEGA, {}, tmp_path / "home")
    assert result.returncode != 0


def test_a_file_that_is_not_a_spectrum_is_refused_and_the_cache_left_alone(site, tmp_path):
    site.faults[VEGA_PATH] = Fault(html_page=True)
    (site.root / VEGA_PATH).write_bytes(b"SIMPLE  =                    T" + b" " * 2850)  # FITS, but no table
    root = tmp_path / "mirage_data"
    with pytest.raises(VerifyError, match="not a"):
        fetch_spectrum(site, root)
    assert not (root / "astropy-cache").exists() and read_record(root, vega.VEGA_FILE_ID) is None


def test_without_astropy_the_vega_target_is_refused():
    code = (
        "import sys; sys.modules['astropy'] = None\n"
        "from mirage_reffiles.errors import UsageError\n"
        "from mirage_reffiles.sources.vega import require_astropy\n"
        "try:\n    require_astropy()\nexcept UsageError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "astropy is not installed" in result.stdout and "mirage-reffiles[simulation]" in result.stdout


def test_the_catalog_groups_what_a_simulation_reads(tmp_path):
    schema = yaml.safe_load((REPO / "config/schemas/config.schema.yaml").read_text())
    config = check_config({"instrument": "niriss", "webbpsf": True, "crds_path": str(tmp_path)}, schema)
    catalog = Catalog(config, REPO, tmp_path / "mirage_data")
    simulation = catalog.selections["simulation"]
    assert set(simulation.source) == {"mirage", "grism", "webbpsf", "vega"}  # CRDS's once its plan is made
    assert set(simulation.instrument) - {""} == {"niriss"}
    assert "webbpsf_data" in catalog.selections["all"].index and "vega" not in catalog.selections["all"].index
    assert list(catalog.selections["vega"].index) == ["vega"]
    assert catalog.simulation_environment() == {}  # nothing is in place yet
