"""The `crds` target against a stand-in CRDS server on 127.0.0.1, then the cache it made used by the
real `crds` library with that server stopped and a serverless CRDS_SERVER_URL, as on a node without
internet."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, Snakemake
from mirage_reffiles.adapters.envfile import SERVERLESS_URL, mirage_environment, write_env_file
from mirage_reffiles.errors import UsageError
from mirage_reffiles.sources import crds as crds_cache
from mirage_reffiles.testing.crds_server import MIRAGE_TYPES, REFERENCE_DIR, serve_crds, write_context
from mirage_reffiles.testing.server import Fault
from mirage_reffiles.tree import layout

pytest.importorskip("crds", reason="the crds extra: pip install 'mirage-reffiles[crds]'")

CONTEXT = "jwst_0001.pmap"
#: The shipped example modes, which the synthetic context covers.
MODES_CSV = (REPO / "config/crds_modes.csv").read_text()
#: Bytes of each synthetic reference file, and bytes per second per connection: each takes ~0.25 s.
REFERENCE_SIZE = 100_000
RATE = 400_000


@pytest.fixture(scope="module")
def crds_root(tmp_path_factory):
    """The stand-in server's tree: {reference name: instrument}, written once."""
    root = tmp_path_factory.mktemp("crds_server")
    return root, write_context(root, CONTEXT, reference_size=REFERENCE_SIZE)


@pytest.fixture
def crds_server(crds_root):
    with serve_crds(crds_root[0], CONTEXT, rate=RATE) as server:
        yield server


class CrdsRun(Snakemake):
    """The workflow's command line with the crds settings of these tests."""

    def __init__(self, workdir: Path, server_url: str):
        super().__init__(workdir, base_url="http://127.0.0.1:9/")  # the MIRAGE_DATA server is not asked
        self.crds_path = workdir / "crds_cache"
        self.modes = workdir / "modes.csv"
        self.modes.write_text(MODES_CSV)
        self.settings = {
            "crds_path": self.crds_path,
            "crds_context": CONTEXT,
            "crds_modes": self.modes,
            "crds_server_url": server_url,
        }

    def __call__(self, *args, config=None, **options):
        return super().__call__(*args, config={**self.settings, **(config or {})}, **options)

    def command(self, *targets):
        settings = {"mirage_data": self.mirage_data, **self.settings}
        return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "4", *targets,
                "--config", *(f"{key}={value}" for key, value in settings.items())]  # fmt: skip


@pytest.fixture
def run(workdir, crds_server):
    return CrdsRun(workdir, crds_server.url)


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def reference_gets(server):
    return [r for r in server.gets() if r.path.startswith(REFERENCE_DIR)]


def server_reference(crds_root, name: str) -> Path:
    return crds_root[0] / REFERENCE_DIR / name


def env_file_variables(mirage_data: Path) -> dict[str, str]:
    variables = {}
    for line in (mirage_data / "mirage_env.sh").read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            variables[name] = shlex.split(value)[0]
    return variables


#: Run in a clean process with only mirage_env.sh's variables: what Mirage's crds_tools.get_reffiles does.
OFFLINE_LOOKUP = """
import json, sys
import crds
question = json.load(sys.stdin)
answers = []
for mode in question["modes"]:
    parameters = {"DATE-OBS": "2026-01-01", "TIME-OBS": "00:00:00", **mode}
    answers.append(crds.getreferences(parameters, reftypes=question["types"]))
print(json.dumps(answers))
"""

#: The same through Mirage itself, where it is installed.
MIRAGE_LOOKUP = """
import json, sys
from mirage.reference_files.crds_tools import get_reffiles
question = json.load(sys.stdin)
answers = []
for mode in question["modes"]:
    parameters = {"DATE-OBS": "2026-01-01", "TIME-OBS": "00:00:00", **mode}
    answers.append(get_reffiles(parameters, question["types"], download=True))
print(json.dumps(answers))
"""


def lookup_offline(run: CrdsRun, code: str) -> list[dict[str, str]]:
    environment = {"PATH": os.environ["PATH"], "HOME": str(run.workdir), **env_file_variables(run.mirage_data)}
    question = json.dumps({"modes": crds_cache.read_modes(run.modes), "types": list(MIRAGE_TYPES)})
    done = subprocess.run([sys.executable, "-c", code], input=question, env=environment, cwd=run.workdir,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_resolves_offline(run: CrdsRun, crds_root, code: str = OFFLINE_LOOKUP):
    answers = lookup_offline(run, code)
    for found in answers:
        assert set(found) == set(MIRAGE_TYPES)
        for path in map(Path, found.values()):
            assert path.is_file(), path
            assert path.is_relative_to(run.crds_path)
            assert sha1(path) == sha1(server_reference(crds_root, path.name))
    return answers


def test_the_cache_resolves_every_mode_and_type_with_no_server(run, crds_server, crds_root):
    run("crds")
    names = crds_root[1]
    references = {path.name: path for path in (run.crds_path / "references").rglob("*") if path.is_file()}
    assert set(references) == set(names)
    for name, path in references.items():
        assert path.parent.name == names[name]
        assert sha1(path) == sha1(server_reference(crds_root, name))
    assert len(reference_gets(crds_server)) == len(names)  # each once
    env = env_file_variables(run.mirage_data)
    assert env["CRDS_SERVER_URL"] == SERVERLESS_URL
    assert env["CRDS_CONTEXT"] == CONTEXT
    assert env["CRDS_READONLY_CACHE"] == "1"
    assert env["CRDS_PATH"] == str(run.crds_path)

    # Downloads overlap: with each taking ~REFERENCE_SIZE / RATE s, serial ones would arrive that far apart.
    arrivals = sorted(r.time for r in reference_gets(crds_server))
    assert min(b - a for a, b in itertools.pairwise(arrivals)) < REFERENCE_SIZE / RATE / 2

    # A second run asks the server nothing at all.
    crds_server.requests.clear()
    second = run("crds")
    assert crds_server.requests == [], crds_server.requests
    assert "to fetch: 0 files" in second.stdout

    crds_server.shutdown()  # an offline node: no server, a serverless URL
    crds_server.server_close()
    answers = assert_resolves_offline(run, crds_root)
    assert {Path(path).name for found in answers for path in found.values()} == set(names)
    if importlib.util.find_spec("mirage") is not None:  # optional: Mirage is a large install
        assert lookup_offline(run, MIRAGE_LOOKUP) == answers


def test_an_instrument_target_fetches_that_instrument_only(run, crds_server, crds_root):
    run("crds_niriss")
    fetched = {Path(r.path).name for r in reference_gets(crds_server)}
    assert fetched == {name for name, instrument in crds_root[1].items() if instrument == "niriss"}


def test_a_dropped_download_resumes_where_it_stopped(run, crds_server, crds_root):
    name = sorted(crds_root[1])[0]
    path = f"{REFERENCE_DIR}/{name}"
    crds_server.faults[path] = Fault(drop_after=40_000)
    run("crds")
    requests = crds_server.requests_for(path)
    assert [r.range for r in requests if r.method == "GET"] == [None, "bytes=40000-"]
    assert sha1(crds_path_of(run, crds_root, name)) == sha1(server_reference(crds_root, name))


def crds_path_of(run: CrdsRun, crds_root, name: str) -> Path:
    return crds_cache.reference_path(run.crds_path, crds_root[1][name], name)


def test_a_killed_run_resumes(run, crds_server, crds_root):
    partials = layout.downloads_dir(run.crds_path)

    def kept_sizes():
        """{name: bytes kept} of the partial downloads (one may take its final name while this looks)."""
        sizes = {}
        for path in partials.glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                sizes[path.name.removesuffix(".part")] = path.stat().st_size
        return sizes

    def some_bytes_kept():
        return any(size > 20_000 for size in kept_sizes().values())

    process = subprocess.Popen(run.command("crds"), cwd=run.workdir, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not some_bytes_kept():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no download started"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    kept = kept_sizes()
    for name in crds_root[1]:  # under a final name, only complete, checked files
        final = crds_path_of(run, crds_root, name)
        assert not final.exists() or sha1(final) == sha1(server_reference(crds_root, name))

    crds_server.requests.clear()
    run("crds")
    resumed = [r for r in reference_gets(crds_server) if r.range]
    assert resumed, "no download resumed"
    for request in resumed:
        assert int(request.range.removeprefix("bytes=").rstrip("-")) >= kept[Path(request.path).name] - 1
    for name in crds_root[1]:
        assert sha1(crds_path_of(run, crds_root, name)) == sha1(server_reference(crds_root, name))


def test_a_reference_whose_sha1_differs_is_refused(run, crds_server, crds_root):
    name = sorted(crds_root[1])[-1]
    crds_server.faults[f"{REFERENCE_DIR}/{name}"] = Fault(corrupt=REFERENCE_SIZE // 2)  # same size, other bytes
    result = run("crds", "--keep-going", check=False)
    assert result.returncode != 0
    final = crds_path_of(run, crds_root, name)
    assert not final.exists()
    assert not list(layout.downloads_dir(run.crds_path).glob(f"{name}*"))
    log = run.crds_path / crds_cache.STATE_DIR / "logs" / crds_root[1][name] / f"{name}.log"
    assert "sha1 check failed" in log.read_text()
    # the others are in place
    assert sum(crds_path_of(run, crds_root, other).is_file() for other in crds_root[1]) == len(crds_root[1]) - 1


@pytest.mark.parametrize(
    ("settings", "modes", "message"),
    [
        ({"crds_context": "jwst_0002.pmap"}, None, "has no context 'jwst_0002.pmap'"),
        ({"crds_context": None}, None, "needs a pinned context"),  # None: left at its default, blank
        ({}, "NIRCAM,NRCB1,F150W,CLEAR,RAPID,NRC_IMAGE,FULL,SHORT", "NIRCAM NRCB1 F150W CLEAR NRC_IMAGE: gain"),
        ({}, "MIRI,MIRIMAGE,F770W,N/A,FAST,MIR_IMAGE,FULL,", "unknown instrument 'MIRI'"),
        ({"crds_types": "[gain,gian]"}, None, "crds_types"),
    ],
)
def test_a_bad_choice_is_refused_before_any_download(run, crds_server, settings, modes, message):
    if modes:
        run.modes.write_text(MODES_CSV + modes + "\n")
    run.settings.update(settings)
    run.settings = {key: value for key, value in run.settings.items() if value is not None}
    result = run("crds", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert reference_gets(crds_server) == []


def test_read_modes_names_what_is_wrong(tmp_path):
    path = tmp_path / "modes.csv"
    path.write_text("INSTRUME,DETECTOR,FILTER,PUPIL,READPATT,EXP_TYPE,COLOUR\nNIRCAM,NRCA1,F070W,CLEAR,RAPID,X,red\n")
    with pytest.raises(UsageError, match="unknown column COLOUR"):
        crds_cache.read_modes(path)
    path.write_text("INSTRUME,DETECTOR,FILTER,PUPIL,READPATT,EXP_TYPE\nnircam,nrca1,F070W,,RAPID,X\n")
    with pytest.raises(UsageError, match="line 2: no PUPIL"):
        crds_cache.read_modes(path)
    path.write_text("INSTRUME,DETECTOR,FILTER,PUPIL,READPATT,EXP_TYPE,CHANNEL\nnircam,nrca1,F070W,clear,RAPID,X,\n")
    blank_channel = {"INSTRUME": "NIRCAM", "DETECTOR": "NRCA1", "FILTER": "F070W", "PUPIL": "CLEAR"}
    assert crds_cache.read_modes(path) == [{**blank_channel, "READPATT": "RAPID", "EXP_TYPE": "X"}]


def test_the_env_file_says_what_each_variable_does(tmp_path):
    online = mirage_environment(tmp_path, str(tmp_path / "cache"), "https://jwst-crds.stsci.edu")
    assert set(online) == {"MIRAGE_DATA", "CRDS_PATH", "CRDS_SERVER_URL"}
    offline = mirage_environment(tmp_path, str(tmp_path / "cache"), "https://jwst-crds.stsci.edu", CONTEXT)
    assert offline["CRDS_SERVER_URL"] == SERVERLESS_URL
    text = write_env_file(tmp_path, offline).read_text()
    lines = text.splitlines()
    for name in offline:
        at = next(number for number, line in enumerate(lines) if line.startswith(f"export {name}="))
        assert lines[at - 1].startswith("# "), name
    assert "Online, use" in text


MIRAGE_YAML = """\
Inst:
  instrument: {instrument}
  mode: {mode}
Readout:
  readpatt: {readpatt}
  array_name: {array_name}
  filter: {filter}
  pupil: {pupil}
"""


def write_yaml(folder: Path, name: str, **values) -> Path:
    path = folder / name
    path.write_text(MIRAGE_YAML.format(**values))
    return path


def test_modes_come_from_mirage_yaml_files_as_mirage_reads_them(tmp_path):
    long = write_yaml(tmp_path, "a.yaml", instrument="NIRCam", mode="wfss", readpatt="rapid",
                      array_name="NRCA5_FULL", filter="F444W", pupil="GRISMR")  # fmt: skip
    guider = write_yaml(tmp_path, "b.yaml", instrument="FGS", mode="imaging", readpatt="FGSRAPID",
                        array_name="FGS1_FULL", filter="N/A", pupil="N/A")  # fmt: skip
    assert crds_cache.mode_from_yaml(long) == {
        "INSTRUME": "NIRCAM", "DETECTOR": "NRCALONG", "FILTER": "F444W", "PUPIL": "GRISMR", "READPATT": "RAPID",
        "CHANNEL": "LONG", "EXP_TYPE": "NRC_IMAGE", "SUBARRAY": "FULL",
    }  # fmt: skip
    assert crds_cache.mode_from_yaml(guider)["DETECTOR"] == "GUIDER1"
    assert len(crds_cache.gather_modes(None, [long, guider, long])) == 2
    (tmp_path / "c.yaml").write_text("Inst: {instrument: NIRCam}\n")
    with pytest.raises(UsageError, match=r"c\.yaml is not a Mirage input yaml file"):
        crds_cache.mode_from_yaml(tmp_path / "c.yaml")


def test_the_crds_target_covers_the_modes_of_mirage_yaml_files(run, crds_server, crds_root):
    sims = run.workdir / "sims"
    sims.mkdir()
    write_yaml(sims, "one.yaml", instrument="NIRCam", mode="imaging", readpatt="RAPID", array_name="NRCA1_FULL",
               filter="F150W", pupil="CLEAR")  # fmt: skip
    write_yaml(sims, "two.yaml", instrument="NIRCam", mode="imaging", readpatt="RAPID", array_name="NRCA5_FULL",
               filter="F444W", pupil="CLEAR")  # fmt: skip
    del run.settings["crds_modes"]
    run("crds", config={"crds_yaml_glob": f"{sims}/*.yaml"})
    fetched = {Path(r.path).name for r in reference_gets(crds_server)}
    assert fetched == {name for name, instrument in crds_root[1].items() if instrument == "nircam"}


def test_a_dry_run_on_an_empty_cache_lists_every_reference_and_writes_nothing(run, crds_server, crds_root):
    preview = run("crds", "--dry-run").stdout
    for name in crds_root[1]:
        size = f"{REFERENCE_SIZE / 1e3:,.2f} kB"
        assert re.search(rf"^  {re.escape(name)}\s+{size}\s+{size}$", preview, re.M), preview
    total = REFERENCE_SIZE * len(crds_root[1])
    assert f"to download: {total / 1e6:,.2f} MB ({total:,} bytes)" in preview
    assert not run.crds_path.exists()  # a dry run writes nothing
    methods = {r.path.split("/")[1] for r in crds_server.rpc_posts()}
    assert "get_best_references" in methods and "get_mapping_names" not in methods
    assert reference_gets(crds_server) == []


def status_line(report: str, scope: str, name: str) -> list[int]:
    """files present, files missing of one line of `snakemake status`."""
    match = re.search(rf"^\s*{scope}\s+{name}\s+(\d+)\s+(\d+)\s", report, re.M)
    assert match, report
    return [int(match.group(1)), int(match.group(2))]


def test_status_covers_the_references_with_the_other_rows(run, crds_server, crds_root):
    assert "none chosen yet" in run("status").stdout
    run("crds_niriss")
    crds_server.requests.clear()
    preview = run("crds", "--dry-run").stdout
    nircam = sorted(name for name, instrument in crds_root[1].items() if instrument == "nircam")
    missing = [name for name, instrument in crds_root[1].items() if instrument != "niriss"]
    assert f"to fetch: {len(missing)} files" in preview
    assert all(re.search(rf"^  {name}\s", preview, re.M) for name in nircam)
    report = run("status").stdout
    niriss = [name for name, instrument in crds_root[1].items() if instrument == "niriss"]
    assert status_line(report, "group", "crds_niriss") == [len(niriss), 0]
    assert status_line(report, "group", "crds_nircam") == [0, len(nircam)]
    assert status_line(report, "source", "crds") == [len(niriss), len(missing)]
    assert status_line(report, "source", "mirage")[0] == 0  # beside the table's rows
    assert crds_server.requests == []  # neither asks the server


def test_verify_names_a_changed_reference_and_repair_restores_it_alone(run, crds_server, crds_root):
    run("crds")
    name = sorted(crds_root[1])[0]
    path = crds_path_of(run, crds_root, name)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one byte, same size
    path.write_bytes(bytes(data))
    assert run("verify", check=False).returncode == 0  # sizes alone cannot see it
    checked = run("verify", config={"verify_contents": True}, check=False)
    assert checked.returncode != 0
    assert f"DAMAGED {name}" in checked.stdout + checked.stderr
    crds_server.requests.clear()
    run("repair", config={"verify_contents": True})
    assert sha1(path) == sha1(server_reference(crds_root, name))
    assert [Path(r.path).name for r in reference_gets(crds_server)] == [name]
    assert not (run.workdir / "repair").exists()  # repair's lists live under .snakemake/
    assert run("verify", config={"verify_contents": True}, check=False).returncode == 0


def test_the_stand_in_server_answers_the_real_crds_client(workdir, crds_server, crds_root):
    """The real client, online, fills its own cache from the stand-in: it answers what crds asks."""
    cache = workdir / "online_cache"
    environment = {"PATH": os.environ["PATH"], "HOME": str(workdir), "CRDS_PATH": str(cache),
                   "CRDS_SERVER_URL": crds_server.url.rstrip("/")}  # fmt: skip
    question = json.dumps({"modes": crds_cache.read_modes(CrdsRun(workdir, "").modes), "types": ["gain", "flat"]})
    done = subprocess.run([sys.executable, "-c", OFFLINE_LOOKUP], input=question, env=environment, cwd=workdir,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for found in json.loads(done.stdout.strip().splitlines()[-1]):
        for path in map(Path, found.values()):
            assert sha1(path) == sha1(server_reference(crds_root, path.name))
    methods = {r.path.split("/")[1] for r in crds_server.rpc_posts()}
    assert {"get_server_info", "get_mapping_names"} <= methods
