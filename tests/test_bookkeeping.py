"""The bookkeeping checks itself: records missing, garbled or wrong are damage that
`verify` names and `repair` fixes; every `repair` repairs; reports leave a
read-only tree alone. Through the real `snakemake` command line against a real
HTTP server, and the package functions on their own.
"""

import gzip
import hashlib
import json
import subprocess

import pytest

from conftest import TABLE_CSV, Snakemake, expected_tree, tree
from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.testing.mirror import build_mirror, synthetic_bytes
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.disk import exclusive
from mirage_reffiles.tree.records import load_record, read_record, remove_unusable_records, unusable_records
from mirage_reffiles.tree.verify import check_file, matches_table
from mirage_reffiles.unpack.content import FITS_MAGIC

DARKS = ["fgs_raw_guider1_1", "fgs_raw_guider1_2", "fgs_raw_guider2_1"]
LIBRARY = "mirage_fgs_cr_library"


class _Any:
    def __eq__(self, other):
        return True


ANY = _Any()  # mirage_env.sh: its content is not what these tests are about


def fits_mirror(tmp_path, file_ids, size=20_000):
    """A mirror of a few rows whose darks begin as FITS files do, and the table pinned to it.

    Returns (the table's CSV, its rows, the files each row produces with their bytes).
    """
    root = tmp_path / "mirror"
    rows, expected = build_mirror(root, load_table(TABLE_CSV).loc[file_ids], size=size)
    for row in rows[rows.archive == "gz"].itertuples():
        data = FITS_MAGIC + synthetic_bytes(row.file_id, size)[len(FITS_MAGIC) :]
        archive = gzip.compress(data, mtime=0)
        (root / row.path).write_bytes(archive)
        rows.loc[row.Index, ["size_bytes", "sha256"]] = [str(len(archive)), hashlib.sha256(archive).hexdigest()]
        expected[row.file_id] = {row.destination: data}
    path = tmp_path / "table.csv"
    rows.to_csv(path, index=False)
    return path, rows, expected


@pytest.fixture
def built(workdir, tmp_path):
    """Three darks and a tarball built by the workflow, and the server it fetched them from."""
    table_csv, rows, expected = fits_mirror(tmp_path, [*DARKS, LIBRARY])
    with serve(tmp_path / "mirror") as server:
        run = Snakemake(workdir, server.url, table_csv)
        settings = {"instrument": "fgs", "dark_type": "raw"}
        run("all", config=settings)
        good = tree(run.mirage_data)
        assert good == expected_tree(expected, rows) | {layout.ENV_FILE: ANY}
        server.requests.clear()
        yield run, settings, rows, good, server


def repair_lists(run):
    """What repairs left in the working directory."""
    return sorted((run.workdir / "repair").glob("*")) if (run.workdir / "repair").exists() else []


def requested(server):
    """The files downloaded (a run may also ask the server a HEAD first, to see that it answers)."""
    return sorted(request.path for request in server.requests if request.method == "GET")


def test_a_missing_or_garbled_record_is_damage_that_repair_fixes(built):
    run, settings, rows, good, server = built
    dark, library = rows.loc[DARKS[0]], rows.loc[LIBRARY]
    layout.record_path(run.mirage_data, dark.file_id).unlink()
    layout.record_path(run.mirage_data, LIBRARY).write_text('{"file_id": "mirage_fgs_cr_li')  # cut off
    member = next(path for path in good if "cosmic_ray_library" in path)
    (run.mirage_data / member).unlink()

    result = run("verify", config=settings, check=False)
    assert result.returncode != 0
    assert f"DAMAGED {dark.file_id}: record missing: {dark.destination} is there" in result.stdout
    assert f"DAMAGED {LIBRARY}: record unreadable" in result.stdout
    assert "2 damaged; run `snakemake --cores 8 repair` to repair them" in result.stdout

    result = run("repair", config=settings)
    assert f"RECORDED {dark.file_id}: {dark.destination} matches the table" in result.stdout
    assert requested(server) == [library.path]  # the dark is recorded again as it is, not fetched
    record = read_record(run.mirage_data, dark.file_id)
    assert record.files[0].crc32 is not None and record.sha256 == "" and record.url.endswith(dark.path)
    assert tree(run.mirage_data) == good
    assert run("verify", config={**settings, "verify_contents": True}).returncode == 0
    assert repair_lists(run) == []


def test_an_unrecorded_dark_that_does_not_match_the_table_is_fetched_again(built):
    run, settings, rows, good, server = built
    short, not_fits = rows.loc[DARKS[1]], rows.loc[DARKS[2]]
    for row in (short, not_fits):
        layout.record_path(run.mirage_data, row.file_id).unlink()
    path = run.mirage_data / short.destination
    path.write_bytes(path.read_bytes()[:-100])
    path = run.mirage_data / not_fits.destination
    path.write_bytes(b"<html>" + bytes(path.stat().st_size - 6))  # the right size, but not a FITS file

    result = run("verify", config=settings, check=False)
    assert result.returncode != 0 and "2 damaged" in result.stdout
    result = run("repair", config=settings)
    removed = f"REMOVED {short.file_id}: {short.destination}: {int(short.unpacked_bytes) - 100} bytes, the table says"
    assert removed in result.stdout
    assert f"REMOVED {not_fits.file_id}: {not_fits.destination}: not a FITS file" in result.stdout
    assert requested(server) == sorted([short.path, not_fits.path])
    assert tree(run.mirage_data) == good
    assert run("verify", config={**settings, "verify_contents": True}).returncode == 0


def test_every_repair_repairs(built):
    run, settings, rows, good, server = built
    # First damage, first repair.
    path = run.mirage_data / rows.loc[DARKS[0]].destination
    path.write_bytes(path.read_bytes()[:-1])
    run("repair", config=settings)
    assert requested(server) == [rows.loc[DARKS[0]].path] and tree(run.mirage_data) == good

    # Damage only the contents see, in the same working directory: the hint says how to repair it.
    server.requests.clear()
    path = run.mirage_data / rows.loc[DARKS[1]].destination
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(data)
    assert run("verify", config=settings).returncode == 0  # the size is right
    result = run("verify", config={**settings, "verify_contents": True}, check=False)
    assert "run `snakemake --cores 8 repair --config verify_contents=true`" in result.stdout
    run("repair", config={**settings, "verify_contents": True})
    assert requested(server) == [rows.loc[DARKS[1]].path] and tree(run.mirage_data) == good

    # Nothing damaged: a repair still checks, and fetches nothing.
    server.requests.clear()
    result = run("repair", config=settings)
    assert "0 damaged" in result.stdout and requested(server) == []
    assert repair_lists(run) == []


def test_a_repair_that_fails_midway_is_finished_by_the_next(built):
    run, settings, rows, good, server = built
    dark = rows.loc[DARKS[2]]
    (run.mirage_data / dark.destination).unlink()  # its record remains: damaged
    server.faults[dark.path] = Fault(statuses=[404])  # not retried: a 404 fails the file at once
    assert run("repair", config=settings, check=False).returncode != 0
    assert not (run.mirage_data / dark.destination).exists()
    assert run("verify", config=settings).returncode == 0  # only missing now, no longer damaged

    server.faults.clear()
    result = run("repair", config=settings)
    assert "1 removed by an earlier repair that did not finish, to be fetched now" in result.stdout
    assert tree(run.mirage_data) == good
    assert repair_lists(run) == []


def test_a_build_fetches_a_tarball_whose_record_is_garbled(built):
    run, settings, rows, good, server = built
    record = layout.record_path(run.mirage_data, LIBRARY)
    record.write_text("not a record")
    member = next(path for path in good if "cosmic_ray_library" in path)
    (run.mirage_data / member).unlink()

    dry = run("-n", "all", config=settings)
    assert f"Would remove the unreadable records of {LIBRARY}" in dry.stdout
    assert record.read_text() == "not a record" and requested(server) == []
    run("all", config=settings)
    assert requested(server) == [rows.loc[LIBRARY].path]
    assert tree(run.mirage_data) == good


@pytest.fixture
def read_only(tmp_path):
    """Bind-mounts a folder read-only on another: yields the function that does it; unmounts at the end."""
    mounts = []

    def mount(source, target):
        target.mkdir()
        for command in (["mount", "--bind", source, target], ["mount", "-o", "remount,bind,ro", target]):
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                if command[1] == "--bind":
                    pytest.skip(f"cannot bind-mount a read-only copy of the tree (root needed): {result.stderr}")
                mounts.append(target)
                pytest.skip(f"cannot remount the bind mount read-only: {result.stderr}")
            if command[1] == "--bind":
                mounts.append(target)
        return target

    try:
        yield mount
    finally:
        for target in mounts:
            subprocess.run(["umount", target], check=True)


def snapshot(root):
    """Every path under ``root`` with its bytes and mtime (folders too): any change shows."""
    return {
        path.relative_to(root).as_posix(): (path.read_bytes() if path.is_file() else None, path.stat().st_mtime_ns)
        for path in [root, *root.rglob("*")]
    }


def test_status_and_verify_leave_a_read_only_tree_alone(built, read_only, workdir):
    run, settings, *_ = built
    run.mirage_data = read_only(workdir / "mirage_data", workdir / "shared")
    with pytest.raises(OSError):
        (run.mirage_data / "probe").write_text("")
    before = snapshot(run.mirage_data)
    result = run("status", "--cores", "1", config=settings)
    assert "Status of" in result.stdout
    result = run("verify", "--cores", "1", config={**settings, "verify_contents": True})
    assert "DAMAGED" not in result.stdout
    # A build over the complete read-only tree is a no-op that says so.
    result = run(config=settings)
    assert "to fetch: 0 files" in result.stdout and "Nothing to be done" in result.stderr
    assert snapshot(run.mirage_data) == before


# The package functions on their own.


def test_load_record_says_why_a_record_cannot_be_used(tmp_path, table):
    path = layout.record_path(tmp_path, "a")
    assert load_record(tmp_path, "a") == (None, "record missing")
    path.parent.mkdir(parents=True)
    for text, reason in [
        ("", "record unreadable: JSONDecodeError"),
        ("[1, 2]", "record unreadable: TypeError"),
        ('{"file_id": "a", "files": [{"path": "x"}]}', "record unreadable: TypeError"),
        (json.dumps({"file_id": "b", "url": "", "size": 0, "sha256": "", "files": [{"path": "x", "size": 1}]}),
         "record is of 'b'"),
        (json.dumps({"file_id": "a", "url": "", "size": 0, "sha256": "", "files": []}), "record lists no files"),
    ]:  # fmt: skip
        path.write_text(text)
        record, problem = load_record(tmp_path, "a")
        assert record is None and problem.startswith(reason), text
        assert read_record(tmp_path, "a") is None
    assert unusable_records(tmp_path, ["a", "never_fetched"]) == ["a"]


def test_an_unusable_record_another_run_holds_is_left(tmp_path):
    for file_id in ("free", "busy"):
        layout.record_path(tmp_path, file_id).parent.mkdir(parents=True, exist_ok=True)
        layout.record_path(tmp_path, file_id).write_text("{")
    with exclusive(layout.lock_path(tmp_path, "busy"), "busy"):
        assert remove_unusable_records(tmp_path, ["free", "busy"]) == (["free"], ["busy"])
    assert not layout.record_path(tmp_path, "free").exists() and layout.record_path(tmp_path, "busy").exists()


def test_a_dark_is_checked_against_the_table(tmp_path, table):
    row = table.loc[DARKS[0]].copy()
    row["root"] = str(tmp_path)
    path = tmp_path / row.destination
    path.parent.mkdir(parents=True)
    path.write_bytes(FITS_MAGIC + bytes(91))
    assert check_file(row).status == "damaged"  # there, and nothing records it
    row[["unpacked_bytes", "unpacked_exact"]] = ["100", "true"]
    assert matches_table(path, row) == ""
    row["unpacked_bytes"] = "101"
    assert matches_table(path, row) == "100 bytes, the table says 101"
    row["unpacked_exact"] = "false"
    path.write_bytes(b"\x1f\x8b" + bytes(98))
    assert matches_table(path, row) == "not a FITS file"
    path.unlink()
    assert check_file(row).status == "missing"
