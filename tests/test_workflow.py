"""The real `snakemake` command line against a real HTTP server on 127.0.0.1."""

import shutil
import subprocess
import sys

import pytest

from conftest import REPO, TABLE_CSV, Snakemake, expected_tree, tree
from mirage_reffiles.sources.mirage import load_table, select, standard_groups
from mirage_reffiles.testing.server import Fault, serve
from mirage_reffiles.tree import layout


def group_rows(table, config, name, **flags):
    return select(table, standard_groups()[name], flags)


def leftovers(mirage_data):
    """Anything partial, staged or archived that should not outlive a build."""
    return sorted(
        str(path.relative_to(mirage_data))
        for path in mirage_data.rglob("*")
        if (path.is_file() and (path.suffix == ".part" or path.name.endswith((".gz", ".tar.gz"))))
        or (path.is_file() and {"incoming", "downloads", "downloaded"} & set(path.parts))
    )


def test_nircam_linearized_builds_mirages_layout(snakemake, server, mirror, table, config):
    result = snakemake("nircam_linearized")
    rows = group_rows(table, config, "nircam_linearized")
    assert len(rows[rows.kind == "dark"]) == 50
    built = tree(snakemake.mirage_data)
    assert built.pop("mirage_env.sh").startswith(b"# Source this file")
    assert built == expected_tree(mirror[1], rows)
    for detector in ("A1", "A5", "B5"):
        assert len(list((snakemake.mirage_data / "nircam/darks/linearized" / detector).glob("*.fits"))) == 5
    assert leftovers(snakemake.mirage_data) == []
    assert f"export MIRAGE_DATA={snakemake.mirage_data}" in result.stdout
    assert len(server.gets()) == len(rows)

    # A second run, even with other settings, sends nothing.
    server.requests.clear()
    snakemake("nircam_linearized", config={"retries": 2, "read_timeout": 5})
    assert server.requests == []

    # A deleted file, and only it, is fetched again.
    dark = rows[rows.kind == "dark"].iloc[7]
    (snakemake.mirage_data / dark.destination).unlink()
    snakemake("nircam_linearized")
    assert [request.path for request in server.gets()] == [dark.path]
    assert tree(snakemake.mirage_data) == built | {
        "mirage_env.sh": (snakemake.mirage_data / "mirage_env.sh").read_bytes()
    }


def test_single_dark_and_keep_archives(snakemake, server, mirror, table, config):
    snakemake("fgs_both", config={"single_dark": True, "keep_archives": True})
    rows = group_rows(table, config, "fgs_both", single_dark=True)
    assert sorted(rows[rows.kind == "dark"].file_id) == [
        "fgs_linearized_guider1_1", "fgs_linearized_guider2_1", "fgs_raw_guider1_1", "fgs_raw_guider2_1",
    ]  # fmt: skip
    built = tree(snakemake.mirage_data)
    archives = {path: data for path, data in built.items() if path.startswith("archives/")}
    assert archives == {f"archives/{row.path}": (mirror[0] / row.path).read_bytes() for row in rows.itertuples()}
    unpacked = {path: data for path, data in built.items() if not path.startswith("archives/")}
    unpacked.pop("mirage_env.sh")
    assert unpacked == expected_tree(mirror[1], rows)


def test_default_target_is_mirages_default_call(snakemake, server, table):
    # download_reffiles(dir) with Mirage's keywords as set in config: here, NIRISS only, no darks.
    snakemake(config={"instrument": "niriss", "skip_darks": True})
    assert sorted(request.path for request in server.gets()) == sorted(
        table[(table.instrument == "niriss") & (table.kind != "dark")].path
    )


@pytest.mark.parametrize("local", ["file_url", "folder"])
def test_a_local_copy_serves_as_base_url(workdir, mirror, table, local):
    base = mirror[0].as_uri() if local == "file_url" else str(mirror[0])
    run = Snakemake(workdir, base, mirror[2])
    run("fgs_raw", config={"skip_darks": True})
    rows = table[(table.instrument == "fgs") & (table.kind != "dark")]
    assert tree(run.mirage_data) == expected_tree(mirror[1], rows) | {
        "mirage_env.sh": (run.mirage_data / "mirage_env.sh").read_bytes()
    }


def test_a_keep_archives_tree_served_over_http_is_a_mirror(snakemake, server, mirror, table, tmp_path):
    # A site keeps the archives of one build and serves them: another build takes them from there.
    snakemake("fgs_raw", config={"single_dark": True, "keep_archives": True})
    rows = group_rows(table, {}, "fgs_raw", single_dark=True)
    with serve(snakemake.mirage_data / layout.ARCHIVE_DIR) as site:
        elsewhere = Snakemake(tmp_path / "elsewhere", site.url, mirror[2])
        elsewhere.workdir.mkdir()
        elsewhere("fgs_raw", config={"single_dark": True})
        assert sorted(r.path for r in site.gets()) == sorted(rows.path)
    built = tree(elsewhere.mirage_data)
    built.pop("mirage_env.sh")
    assert built == expected_tree(mirror[1], rows)


@pytest.mark.parametrize(
    ("target", "config", "words"),
    [
        ("nircam_cooked", {}, ["unknown target 'nircam_cooked'", "nircam_linearized", "fgs_both"]),
        ("all", {"instrument": "nircam,miri"}, ["unknown instrument 'miri'", "nircam, niriss, fgs"]),
        ("all", {"dark_type": "cooked"}, ["dark_type", "'cooked' is not one of linearized, raw, both"]),
        ("all", {"single_darks": True}, ["unknown setting 'single_darks'", "did you mean 'single_dark'"]),
        ("all", {"retries": -1}, ["retries", "-1 is out of range; it must be at least 0 and at most 1000"]),
    ],
)
def test_bad_input_fails_before_any_download(snakemake, server, target, config, words):
    result = snakemake(target, config=config, check=False)
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr
    assert server.requests == []
    assert not snakemake.mirage_data.exists()


def test_bad_table_row_is_named(snakemake, server, workdir):
    lines = TABLE_CSV.read_text().splitlines()
    index = next(n for n, line in enumerate(lines) if ",niriss," in line and n > 3)
    lines[index] = lines[index].replace(",niriss,", ",nirspec,", 1)
    bad = workdir / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    result = snakemake("all", config={"reference_table": str(bad)}, check=False)
    assert result.returncode != 0
    message = f"line {index + 1}, column instrument: bad value 'nirspec'; allowed: 'nircam', 'niriss', 'fgs'"
    assert message in result.stderr
    assert server.requests == []


def test_missing_file_fails_and_the_rest_completes(snakemake, server, table, config):
    rows = group_rows(table, config, "fgs_raw")
    gone = rows[rows.kind == "dark"].iloc[2]
    server.faults[gone.path] = Fault(statuses=[404])  # not retried: a 404 fails the file at once
    result = snakemake("fgs_raw", "--keep-going", check=False)
    assert result.returncode != 0
    log = (snakemake.mirage_data / ".reffiles/logs" / f"{gone.destination}.log").read_text()
    assert f"{gone.file_id}: " in log and "HTTP 404" in log and gone.path in log
    present = tree(snakemake.mirage_data)
    assert gone.destination not in present
    assert len([p for p in present if p.startswith("fgs/darks/raw/")]) == len(rows[rows.kind == "dark"]) - 1
    assert leftovers(snakemake.mirage_data) == []


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "snakemake", "--lint", "--config", "mirage_data=/nonexistent"],
        ["snakefmt", "--check", "."],
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
    ],
    ids=["snakemake-lint", "snakefmt", "ruff", "ruff-format"],
)
def test_code_is_clean(command):
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} is not installed (pip install -e '.[dev]')")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_verify_finds_damage_and_repair_restores_it(snakemake, server, mirror, table, config):
    snakemake("fgs_raw")
    rows = group_rows(table, config, "fgs_raw")
    good = tree(snakemake.mirage_data)
    flipped, truncated = rows[rows.kind == "dark"].iloc[[0, 3]].itertuples()
    member = next(iter(mirror[1]["mirage_fgs_cr_library"]))  # a tarball member, deleted
    path = snakemake.mirage_data / flipped.destination
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(data)
    path = snakemake.mirage_data / truncated.destination
    path.write_bytes(path.read_bytes()[:-10])
    (snakemake.mirage_data / member).unlink()

    sizes_only = snakemake("verify", check=False)
    assert sizes_only.returncode != 0
    assert "2 damaged; run `snakemake --cores 8 repair` to repair them" in sizes_only.stdout  # a flip keeps the size
    result = snakemake("verify", config={"verify_contents": True}, check=False)
    assert result.returncode != 0
    assert "3 damaged; run `snakemake --cores 8 repair --config verify_contents=true`" in result.stdout
    for file_id in (flipped.file_id, truncated.file_id, "mirage_fgs_cr_library"):
        assert f"DAMAGED {file_id}:" in result.stdout
    assert "CRC-32 differs from the record" in result.stdout and f"{member}: missing" in result.stdout
    assert server.gets()[len(rows) :] == []  # verify reads the tree only

    server.requests.clear()
    snakemake("repair", config={"verify_contents": True})
    assert sorted(r.path for r in server.gets()) == sorted([flipped.path, truncated.path, rows.path.iloc[0]])
    assert tree(snakemake.mirage_data) == good
    assert snakemake("verify", config={"verify_contents": True}).returncode == 0


def test_pinned_table_refuses_a_changed_file(snakemake, server, mirror, table, workdir):
    snakemake("fgs_raw", config={"skip_darks": True})
    pinned_csv = workdir / "pinned.csv"
    shutil.copy(TABLE_CSV, pinned_csv)
    pin = [sys.executable, "-m", "mirage_reffiles.pin", str(snakemake.mirage_data), "--table", str(pinned_csv)]
    subprocess.run(pin, check=True, cwd=REPO)
    pinned = load_table(pinned_csv)
    library = pinned.loc["mirage_fgs_cr_library"]
    assert library.size_exact == "true" and int(library.size_bytes) == (mirror[0] / library.path).stat().st_size
    assert len(library.sha256) == 64 and pinned.loc["nircam_raw_A1_1"].sha256 == ""

    # A local copy that holds another valid tarball under that name is refused.
    other = workdir / "other_copy"
    (other / library.path).parent.mkdir(parents=True)
    data_other = (mirror[0] / pinned.loc["mirage_niriss_cr_library"].path).read_bytes()
    (other / library.path).write_bytes(data_other)
    pinned.loc["mirage_fgs_cr_library", "size_bytes"] = str(len(data_other))  # only the checksum tells them apart
    pinned.to_csv(pinned_csv, index=False)
    (snakemake.mirage_data / layout.STATE_DIR / "records" / "mirage_fgs_cr_library.json").unlink()
    settings = {"skip_darks": True, "reference_table": pinned_csv, "base_url": other}
    result = snakemake("fgs_raw", config=settings, check=False)
    assert result.returncode != 0
    log = (snakemake.mirage_data / layout.STATE_DIR / "logs" / "mirage_fgs_cr_library.log").read_text()
    assert "sha256 check failed" in log
    assert not layout.record_path(snakemake.mirage_data, "mirage_fgs_cr_library").exists()


def test_a_failed_download_resumes_on_the_next_run(snakemake, server, mirror, table):
    row = table.loc["fgs_raw_guider2_1"]
    size = (mirror[0] / row.path).stat().st_size
    server.faults[row.path] = Fault(drop_after=size // 2)
    # No retry inside the job: the drop fails the file; the next run asks only for the rest.
    settings = {"retries": 0, "skip_darks": False, "single_dark": True}
    failed = snakemake("fgs_raw", config=settings, check=False)
    assert failed.returncode != 0 and not (snakemake.mirage_data / row.destination).exists()
    snakemake("fgs_raw", config=settings)
    assert [r.range for r in server.requests_for(row.path) if r.method == "GET"] == [None, f"bytes={size // 2}-"]
    assert (snakemake.mirage_data / row.destination).read_bytes() == mirror[1][row.file_id][row.destination]
    log = (snakemake.mirage_data / layout.STATE_DIR / "logs" / f"{row.destination}.log").read_text()
    assert "done" in log


@pytest.mark.parametrize("keep_archives", [False, True])
def test_downloads_on_submit_host_then_unpack(snakemake, server, mirror, table, config, keep_archives):
    settings = {"downloads_on_submit_host": True, "keep_archives": keep_archives}
    snakemake("fgs_raw", config=settings)
    rows = group_rows(table, config, "fgs_raw")
    built = tree(snakemake.mirage_data)
    built.pop("mirage_env.sh")
    archives = {path: data for path, data in built.items() if path.startswith("archives/")}
    unpacked = {path: data for path, data in built.items() if not path.startswith("archives/")}
    assert unpacked == expected_tree(mirror[1], rows)
    assert len(archives) == (len(rows) if keep_archives else 0)
    assert leftovers(snakemake.mirage_data) == ([] if not keep_archives else sorted(archives))
    assert sorted(r.path for r in server.gets()) == sorted(rows.path)


def test_a_file_of_a_tarball_by_path_fetches_its_tarball_alone(snakemake, server, mirror, table):
    library = table.loc["mirage_fgs_cr_library"]
    member = sorted(mirror[1][library.file_id])[0]
    target = snakemake.mirage_data / member
    snakemake(str(target))
    assert target.read_bytes() == mirror[1][library.file_id][member]
    assert [r.path for r in server.gets()] == [library.path]
    server.requests.clear()
    snakemake(str(target))  # there: no job, no request
    assert server.requests == []
    wrong = snakemake(str(target.with_name("no_such_file.fits")), check=False)
    assert wrong.returncode != 0
    assert "is in no archive whose folder holds it (mirage_fgs_cr_library)" in wrong.stderr + wrong.stdout
