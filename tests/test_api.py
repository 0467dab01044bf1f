"""download_reffiles(), the mirage-reffiles command, and adopting Mirage's own trees."""

import gc
import gzip
import re
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import Snakemake, expected_tree, tree
from mirage_reffiles import download_reffiles
from mirage_reffiles.api import profile_settings, workflow_dir
from mirage_reffiles.errors import ServerUnreachable, SpaceError, UsageError
from mirage_reffiles.sources.mirage import as_rows, load_table, select
from mirage_reffiles.tree.adopt import adopt_mirage_tree
from mirage_reffiles.tree.layout import record_path, tarball_member_destination
from mirage_reffiles.tree.verify import check_file


def test_download_reffiles_builds_what_the_command_line_builds(tmp_path, server, mirror, monkeypatch):
    monkeypatch.delenv("MIRAGE_DATA", raising=False)
    pinned = {"reference_table": str(mirror[2])}
    mirage_data = download_reffiles(
        tmp_path / "api", instrument="fgs", single_dark=True, base_url=server.url, cores=4, config=pinned
    )
    assert mirage_data == tmp_path / "api" / "mirage_data"
    from_api = tree(mirage_data)
    api_requests = sorted(r.path for r in server.gets())

    server.requests.clear()
    cli = Snakemake(tmp_path / "cli", server.url, mirror[2])
    cli.workdir.mkdir()
    cli("fgs_linearized", config={"single_dark": True})
    from_cli = tree(cli.mirage_data)
    assert from_api.pop("mirage_env.sh") != from_cli.pop("mirage_env.sh")  # each names its own tree
    assert from_api == from_cli
    assert api_requests == sorted(r.path for r in server.gets())


def planned(preview):
    """The files a preview lists to fetch."""
    return re.findall(r"^  (\S+) +[\d.,]+ [kMG]?B\*? +[\d.,]+ [kMG]?B\*?$", preview, re.MULTILINE)


@pytest.mark.parametrize(
    "arguments",
    [
        {"instrument": "niriss", "dark_type": "raw", "skip_psfs": True},
        {"instrument": "nircam,fgs", "dark_type": "both", "single_dark": True, "skip_cosmic_rays": True},
        {"instrument": "all", "skip_darks": True, "skip_soss": True},
    ],
)
def test_every_argument_selects_as_the_config_keyword_does(tmp_path, server, mirror, arguments, capsys):
    config = {"reference_table": str(mirror[2])}
    download_reffiles(tmp_path / "api", base_url=server.url, dry_run=True, config=config, **arguments)
    from_api = capsys.readouterr().out
    from_config = Snakemake(tmp_path, server.url, mirror[2])("-n", config=arguments).stdout
    assert planned(from_api) and planned(from_api) == planned(from_config)
    table = load_table(mirror[2])
    instruments = (
        ["nircam", "niriss", "fgs"] if arguments["instrument"] == "all" else arguments["instrument"].split(",")
    )
    dark_types = {"raw": ["raw"], "both": ["raw", "linearized"]}.get(arguments.get("dark_type"), ["linearized"])
    group = {"instrument": instruments, "dark_type": dark_types}
    assert sorted(planned(from_api)) == sorted(select(table, group, arguments).file_id)
    assert server.requests == []


def test_bad_arguments_name_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown instrument 'miri'.*nircam, niriss, fgs"):
        download_reffiles(tmp_path, instrument="miri")
    with pytest.raises(ValueError, match="unknown dark_type 'cooked'; choose one of linearized, raw, both"):
        download_reffiles(tmp_path, dark_type="cooked")
    assert list(tmp_path.iterdir()) == []


def test_the_command_documents_and_checks_its_options():
    help_text = subprocess.run(["mirage-reffiles", "--help"], capture_output=True, text=True, check=True).stdout
    options = ["--instrument", "--dark-type", "--skip-darks", "--single-dark", "--skip-cosmic-rays", "--skip-psfs"]
    options += ["--skip-soss", "--cores", "--base-url", "--dry-run", "--remove-mirage-archives"]
    for option in options:
        assert option in help_text
    bad = subprocess.run(["mirage-reffiles", "x", "--instrument", "miri"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown instrument 'miri'" in bad.stderr and "nircam, niriss, fgs" in bad.stderr
    bad = subprocess.run(["mirage-reffiles", "x", "--dark-type", "cooked"], capture_output=True, text=True)
    assert bad.returncode == 2 and "choose from 'linearized', 'raw', 'both'" in bad.stderr


def test_the_command_runs_the_build(tmp_path, server, mirror):
    command = ["mirage-reffiles", str(tmp_path), "--instrument", "fgs", "--skip-darks", "--base-url", server.url]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"export MIRAGE_DATA={tmp_path / 'mirage_data'}" in result.stdout
    assert sorted(r.path for r in server.gets()) == sorted(
        row.path for row in load_table(mirror[2]).itertuples() if row.instrument == "fgs" and row.kind != "dark"
    )


def mirage_made_tree(directory, mirror, rows):
    """Lay out ``rows`` the way Mirage's downloader leaves them in ``directory``."""
    mirage_data = directory / "mirage_data"
    for row in rows.itertuples():
        served = mirror[0] / row.path
        if row.archive == "gz":
            final = mirage_data / row.destination
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(served, final.with_name(final.name + ".gz"))
            final.write_bytes(mirror[1][row.file_id][row.destination])
        else:
            shutil.copy(served, directory / served.name)
            with tarfile.open(served) as tar:
                for member in tar.getmembers():
                    if member.isreg():
                        target = mirage_data / tarball_member_destination(member.name)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(tar.extractfile(member).read())


def test_a_tree_from_mirages_downloader_is_adopted(tmp_path, server, mirror, capsys):
    table = load_table(mirror[2])
    rows = select(table, {"instrument": ["fgs"], "dark_type": ["linearized"]}, {})
    darks = rows[rows.kind == "dark"]
    mirage_made_tree(tmp_path, mirror, rows.drop(darks.index[0]))  # one dark never downloaded
    broken = tmp_path / "mirage_data" / darks.destination.iloc[1]
    broken.write_bytes(broken.read_bytes()[:-100])  # cut short, as an interrupted copy leaves it
    copies = sorted(tmp_path.rglob("*.gz"))

    download_reffiles(tmp_path, instrument="fgs", base_url=server.url, config={"reference_table": str(mirror[2])})
    output = capsys.readouterr().out
    assert sorted(r.path for r in server.gets()) == sorted(darks.path.iloc[:2])
    assert "Adopted 8 files" in output  # of 10: one never downloaded, one cut short
    assert "1 did not match" in output and "remain" in output
    built = tree(tmp_path / "mirage_data")
    assert {p: d for p, d in built.items() if not p.endswith(".gz") and p != "mirage_env.sh"} == expected_tree(
        mirror[1], rows
    )
    assert all(record_path(tmp_path / "mirage_data", file_id).exists() for file_id in rows.file_id)
    assert sorted(tmp_path.rglob("*.gz")) == copies  # kept until asked

    server.requests.clear()
    download_reffiles(tmp_path, instrument="fgs", base_url=server.url, remove_mirage_archives=True,
                      config={"reference_table": str(mirror[2])})  # fmt: skip
    assert server.requests == []
    assert list(tmp_path.rglob("*.gz")) == []
    assert "were removed" in capsys.readouterr().out


def test_adoption_holds_to_the_table_and_removes_only_the_copies_it_adopted(tmp_path, mirror):
    table = load_table(mirror[2])
    rows = select(table, {"instrument": ["fgs"], "dark_type": ["linearized"]}, {})
    mirage_made_tree(tmp_path, mirror, rows)
    mirage_data = tmp_path / "mirage_data"
    darks = [mirage_data / destination for destination in rows[rows.kind == "dark"].destination]
    # A dark Mirage kept no .gz of, cut short: the table pins its exact size.
    darks[0].with_name(darks[0].name + ".gz").unlink()
    darks[0].write_bytes(darks[0].read_bytes()[:-100])
    # A dark and its .gz, whole and matching each other, but of a shorter file than the table pins.
    short = darks[1].read_bytes()[:-100]
    darks[1].write_bytes(short)
    darks[1].with_name(darks[1].name + ".gz").write_bytes(gzip.compress(short))
    # A tarball Mirage kept whole, one of whose members is not in the tree.
    library = rows[rows.kind != "dark"].iloc[0]
    (mirage_data / next(iter(mirror[1][library.file_id]))).unlink()
    copies = sorted(tmp_path.rglob("*.gz"))

    adoption = adopt_mirage_tree(tmp_path, table, "http://127.0.0.1:9/", remove_archives=True)
    ids = rows.set_index("destination").file_id
    refused = {ids[darks[0].relative_to(mirage_data).as_posix()], ids[darks[1].relative_to(mirage_data).as_posix()]}
    assert set(adoption.rejected) == refused | {library.file_id}
    assert len(adoption.adopted) == len(rows) - 3
    tree_rows = as_rows(table, mirage_data, ["http://127.0.0.1:9/"])
    for file_id in adoption.rejected:  # to be fetched again: nothing vouches for them
        assert check_file(tree_rows.loc[file_id], with_contents=True).status == "missing"
    assert not darks[0].exists() and not darks[1].exists()
    kept = [darks[1].with_name(darks[1].name + ".gz"), tmp_path / Path(library.path).name]
    assert sorted(tmp_path.rglob("*.gz")) == sorted(kept)  # the copies of what was adopted, and only they, removed
    assert len(adoption.removed) == len(copies) - 2
    assert "2 archive copies" in adoption.describe(removed=True) and "were not adopted" in adoption.describe(True)


def test_download_reffiles_applies_the_whole_workflow_profile():
    # A key added to profiles/default that download_reffiles() does not apply would fail here.
    settings = profile_settings(workflow_dir() / "profiles" / "default" / "config.yaml")
    assert settings["resources"] == {"downloads": 8} and settings["lock"] is False


def test_download_reffiles_raises_the_documented_errors(tmp_path, server, mirror, table):
    pinned = {"reference_table": str(mirror[2])}
    with pytest.raises(UsageError, match="unknown setting 'sigle_dark'; did you mean 'single_dark'"):
        download_reffiles(tmp_path / "a", instrument="fgs", base_url=server.url, config={**pinned, "sigle_dark": True})
    assert gc.isenabled()  # refused before the workflow's freeze(): the caller's collector is on again
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}/"
    with pytest.raises(ServerUnreachable, match="refused the connection"):
        download_reffiles(tmp_path / "b", instrument="fgs", base_url=refused, config=pinned)
    huge = tmp_path / "huge.csv"
    table.assign(size_bytes=str(10**16), size_exact="true").to_csv(huge, index=False)
    with pytest.raises(SpaceError, match="not starting all"):
        download_reffiles(tmp_path / "c", instrument="fgs", base_url=server.url, config={"reference_table": str(huge)})
    assert server.gets() == []
