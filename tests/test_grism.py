"""Grism folders: each instrument's GitHub repository archive, served GitHub's way by a real
local server, its chosen version folder extracted into <inst>/GRISM_<INST>/current/ and
checked file by file against the table's git blob SHA-1s."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile

import pandas as pd
import pytest
import yaml

from conftest import REPO, Snakemake, tree
from mirage_reffiles.sources.grism import choose_version, grism_rows, load_grism_table, version_order
from mirage_reffiles.testing.grism import (
    REPOSITORIES,
    archive_path,
    blob_sha1,
    build_grism_mirror,
    commit_of,
    tamper,
    write_archive,
)
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.layout import grism_folder
from mirage_reffiles.unpack.hashing import git_blob_sha1

SCHEMA = yaml.safe_load((REPO / "config/schemas/grism_files.schema.yaml").read_text())


@pytest.fixture
def grism_mirror(tmp_path):
    """(root, the table's CSV, each instrument's version folders with their files' bytes): one per test,
    as some tests serve a tampered archive."""
    root = tmp_path / "github"
    table, contents = build_grism_mirror(root)
    csv = tmp_path / "grism_files.csv"
    table.to_csv(csv, index=False)
    return root, csv, contents


@pytest.fixture
def github(grism_mirror):
    with serve(grism_mirror[0]) as running:
        yield running


@pytest.fixture
def run(workdir, server, mirror, github, grism_mirror):
    """The CLI, the reference files from the usual mirror and the grism archives from `github`."""
    snakemake = Snakemake(workdir, server.url, mirror[2])

    def call(*args, config=None, **kwargs):
        settings = {"grism_base_url": github.url, "grism_table": str(grism_mirror[1]), **(config or {})}
        return snakemake(*args, config=settings, **kwargs)

    call.mirage_data = snakemake.mirage_data
    return call


def newest(instrument: str) -> str:
    return REPOSITORIES[instrument][1][-1]


def current(mirage_data, instrument: str) -> dict[str, bytes]:
    """What ``current/`` holds, by name inside it."""
    folder = mirage_data / grism_folder(instrument)
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_blob_sha1_is_what_git_computes(tmp_path):
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    assert blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_versions_sort_by_number_and_bad_names_are_refused():
    table = load_grism_table(REPO / "config/grism_files.csv", schema=SCHEMA)
    assert sorted(["V9", "V3b", "V10", "V3", "V4"], key=version_order) == ["V3", "V3b", "V4", "V9", "V10"]
    assert choose_version(table, "nircam") == "V9" and choose_version(table, "niriss") == "V3"
    assert choose_version(table, "nircam", "V3b") == "V3b"
    with pytest.raises(ValueError, match=r"'V7' is not a version folder.*V1, V2, V3, V3b, V4, V9.*newest \(V9\)"):
        choose_version(table, "nircam", "V7")


def test_shipped_table_rows_preview_the_newest_folder():
    table = load_grism_table(REPO / "config/grism_files.csv", schema=SCHEMA)
    rows = grism_rows(table, {"nircam": "", "niriss": "V1"}, "https://github.com/")
    nircam = rows.loc["nircam_grism_V9"]
    assert (
        nircam.urls
        == "https://github.com/npirzkal/GRISM_NIRCAM/archive/231a434e663486ac82b114a8c2a5eb501a23009c.tar.gz"
    )
    v9 = table[(table.instrument == "nircam") & (table.version == "V9")]
    assert int(nircam.unpacked_bytes) == sum(int(size) for size in v9.size_bytes if size)
    assert nircam.unpacked_exact == "false"  # V9 has files of unknown size
    assert rows.loc["niriss_grism_V1"].unpacked_exact == "true"  # every V1 size is known
    assert nircam.destination == "nircam/GRISM_NIRCAM/current"


def test_both_groups_fill_current_with_the_newest_version_then_fetch_nothing(run, github, grism_mirror):
    contents = grism_mirror[2]
    preview = run("-n", "nircam_grism", "niriss_grism").stdout
    assert "nircam_grism_V10" in preview and "niriss_grism_V2" in preview
    assert github.requests == []

    run("nircam_grism", "niriss_grism")
    for instrument in REPOSITORIES:
        files = current(run.mirage_data, instrument)
        assert files == contents[instrument][newest(instrument)]  # exactly the newest folder, byte for byte
        table = pd.read_csv(grism_mirror[1], dtype=str, keep_default_na=False)
        pinned = table[table.path.str.startswith(f"{newest(instrument)}/") & (table.instrument == instrument)]
        folder = run.mirage_data / grism_folder(instrument)
        assert {name: git_blob_sha1(folder / name) for name in files} == {
            path.split("/", 1)[1]: sha1 for path, sha1 in zip(pinned.path, pinned.git_blob_sha1, strict=True)
        }
        record_path = run.mirage_data / f".reffiles/records/{instrument}_grism_{newest(instrument)}.json"
        record = json.loads(record_path.read_text())
        assert {item["path"] for item in record["files"]} == {f"{grism_folder(instrument)}/{name}" for name in files}
        assert all(item["sha256"] == hashlib.sha256(files[item["path"].rsplit("/", 1)[1]]).hexdigest()
                   for item in record["files"])  # fmt: skip
    assert sorted(r.path for r in github.gets()) == sorted(archive_path(repo) for repo, _ in REPOSITORIES.values())
    assert not list((run.mirage_data / ".reffiles/downloads").glob("*"))  # the archives are gone
    everything = tree(run.mirage_data)
    assert {path.split("/")[1] for path in everything if "/" in path} == {"GRISM_NIRCAM", "GRISM_NIRISS"}

    github.requests.clear()
    again = run("nircam_grism", "niriss_grism")
    assert github.requests == [] and tree(run.mirage_data) == everything
    assert "Nothing to be done" in again.stdout + again.stderr or "already present: 1" in again.stdout

    status = run("status", config={"status_csv": run.mirage_data.parent / "status.csv"})
    assert "nircam_grism" in status.stdout
    report = pd.read_csv(run.mirage_data.parent / "status.csv").set_index(["scope", "name"])
    assert tuple(report.loc[("group", "niriss_grism"), ["files_present", "files_missing"]]) == (1, 0)
    assert report.loc[("group", "niriss_grism"), "bytes_present"] > 0
    run("verify", "--cores", "1", config={"verify_contents": True})


def test_an_older_version_by_config_then_the_newest_replaces_it(run, grism_mirror):
    contents = grism_mirror[2]["nircam"]
    run("nircam_grism", config={"nircam_grism_version": "V3b"})
    assert current(run.mirage_data, "nircam") == contents["V3b"]

    run("nircam_grism")  # back to the newest: nothing of V3b is left
    assert current(run.mirage_data, "nircam") == contents[newest("nircam")]
    records = sorted(path.name for path in (run.mirage_data / ".reffiles/records").glob("nircam_grism_*"))
    assert records == [f"nircam_grism_{newest('nircam')}.json"]


def test_a_tampered_file_refuses_the_archive_and_changes_nothing(run, github, grism_mirror):
    root, _, contents = grism_mirror
    run("nircam_grism", config={"nircam_grism_version": "V9"})
    before = tree(run.mirage_data)
    name = tamper(root, "nircam", contents, newest("nircam"))
    github.requests.clear()

    result = run("nircam_grism", check=False)
    assert result.returncode != 0
    log = (run.mirage_data / f".reffiles/logs/nircam_grism_{newest('nircam')}.log").read_text()
    assert f"{name}: git blob SHA-1" in log and "does not match the grism table" in log
    assert tree(run.mirage_data) == before  # current/ still holds V9, untouched
    assert len(github.gets()) == 2  # refused, fetched once more from the start, refused again
    assert not list((run.mirage_data / ".reffiles/downloads").glob("*"))  # the archive was deleted
    assert not list((run.mirage_data / ".reffiles/incoming").glob("*"))  # so was the staging folder
    assert not (run.mirage_data / f".reffiles/records/nircam_grism_{newest('nircam')}.json").exists()


def test_all_includes_the_grism_folders_only_when_asked(run, github):
    plain = run("-n", "all", config={"instrument": "nircam,fgs"}).stdout
    assert "nircam_grism" not in plain
    asked = run("-n", "all", config={"instrument": "nircam,fgs", "grism": True}).stdout
    assert f"nircam_grism_{newest('nircam')}" in asked and "niriss_grism" not in asked
    assert github.requests == []


@pytest.mark.parametrize(
    ("args", "config", "words"),
    [
        (["niriss_grism"], {"niriss_grism_version": "V7"}, ["'niriss_grism_version'", "'V7'", "V1, V2", "newest (V2)"]),
        (["nircam_grsim"], {}, ["unknown target 'nircam_grsim'", "nircam_grism", "niriss_grism"]),
        (["nircam_grism"], {"grism": "maybe"}, ["'grism'", "not true or false"]),
    ],
    ids=["version", "target", "keyword"],
)
def test_a_mistake_is_a_short_error_before_any_download(run, server, github, args, config, words):
    result = run(*args, config=config, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 5, result.stderr
    for word in words:
        assert word in result.stderr
    assert github.requests == [] and server.gets() == []
    assert not (run.mirage_data / "nircam").exists()


def test_the_synthetic_archive_is_laid_out_as_githubs(grism_mirror):
    import tarfile

    root, _, _ = grism_mirror
    repository = REPOSITORIES["niriss"][0]
    with tarfile.open(root / archive_path(repository)) as tar:
        names = tar.getnames()
        assert tar.pax_headers["comment"] == archive_path(repository).split("/")[-1].removesuffix(".tar.gz")
    top = names[0]
    assert top == f"GRISM_NIRISS-{tar.pax_headers['comment']}" and all(name.startswith(top) for name in names)
    assert subprocess.run(["tar", "-tzf", str(root / archive_path(repository))], capture_output=True).returncode == 0


def test_a_dropped_connection_resumes_where_it_stopped(run, github, grism_mirror):
    path = archive_path(REPOSITORIES["niriss"][0])
    github.faults[path] = Fault(drop_after=5000)
    run("niriss_grism")
    assert current(run.mirage_data, "niriss") == grism_mirror[2]["niriss"][newest("niriss")]
    gets = [r for r in github.gets() if r.path == path]
    assert [r.range for r in gets] == [None, "bytes=5000-"]


def test_an_unsafe_member_refuses_the_archive(run, grism_mirror):
    root, _, contents = grism_mirror
    folders = {name: dict(files) for name, files in contents["niriss"].items()}
    folders[newest("niriss")]["../../escaped.conf"] = b"outside\n"
    write_archive(root, REPOSITORIES["niriss"][0], folders)
    result = run("niriss_grism", check=False)
    assert result.returncode != 0
    log = (run.mirage_data / f".reffiles/logs/niriss_grism_{newest('niriss')}.log").read_text()
    assert "unsafe member" in log and "'..'" in log
    assert not (run.mirage_data / "niriss").exists() and not list(run.mirage_data.parent.rglob("escaped.conf"))


def test_a_link_in_the_version_folder_and_a_file_written_through_it_are_a_short_refusal(run, github, grism_mirror):
    root, _, contents = grism_mirror
    folders = {name: dict(files) for name, files in contents["niriss"].items()}
    link = tarfile.TarInfo("sub")
    link.type, link.linkname = tarfile.SYMTYPE, "../.."  # from current/ to niriss/, inside the staging folder
    folders[newest("niriss")] |= {"sub": link, "sub/escaped.conf": b"outside current/\n"}
    write_archive(root, REPOSITORIES["niriss"][0], folders)
    file_id = f"niriss_grism_{newest('niriss')}"
    member = f"GRISM_NIRISS-{commit_of(REPOSITORIES['niriss'][0])}/{newest('niriss')}/sub"
    for _ in range(2):  # the archive is not kept: each run asks once more, and says the same
        result = run("niriss_grism", check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        log = (run.mirage_data / f".reffiles/logs/{file_id}.log").read_text()
        assert f"unsafe member {member!r} refused: a link" in log
        assert not (run.mirage_data / "niriss").exists() and not list(run.mirage_data.parent.rglob("escaped.conf"))
        assert not layout.partial_download_path(run.mirage_data, file_id, "tar.gz").exists()
    assert len(github.gets()) == 4  # fetched once more from the start in each run


def test_verify_finds_a_damaged_grism_file_and_repair_fetches_the_folder_again(run, github, grism_mirror):
    run("niriss_grism")
    folder = run.mirage_data / grism_folder("niriss")
    victim = sorted(folder.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-1])
    result = run("verify", "--cores", "1", check=False)
    assert result.returncode != 0 and f"DAMAGED niriss_grism_{newest('niriss')}" in result.stdout
    github.requests.clear()
    run("repair")
    assert current(run.mirage_data, "niriss") == grism_mirror[2]["niriss"][newest("niriss")]
    assert len(github.gets()) == 1
    run("verify", "--cores", "1")
