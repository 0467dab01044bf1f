"""Dry-run previews, status and exact sizes: the cost of a build before it starts."""

import re
import subprocess
import sys

import pandas as pd

from conftest import REPO, TABLE_CSV, Snakemake
from mirage_reffiles.sources.mirage import load_table, select, standard_groups
from mirage_reffiles.testing.server import Fault


def summary(output):
    """The numbers of a preview's summary lines."""
    fetch = re.search(r"to fetch: (\d+) files \((\d+) darks, (\d+) archives\); already present: (\d+)", output)
    download = re.search(r"to download: ([\d.,]+ \w+)( \(estimate\))? \(([\d,]+) bytes\)", output)
    return {
        "fetch": tuple(map(int, fetch.groups())),
        "download": download.group(1),
        "estimate": bool(download.group(2)),
        "download_bytes": int(download.group(3).replace(",", "")),
    }


def test_preview_counts_only_what_is_missing(snakemake, server, mirror, config):
    snakemake("fgs_raw")
    table = load_table(mirror[2])
    rows = select(table, standard_groups()["fgs_raw"], {})
    gone = rows.loc[["fgs_raw_guider2_2", "fgs_raw_guider1_3"]]
    for row in gone.itertuples():
        (snakemake.mirage_data / row.destination).unlink()
    (snakemake.mirage_data / ".reffiles/records/fgs_gridded_psf_library.json").unlink()
    missing = pd.concat([gone, table.loc[["fgs_gridded_psf_library"]]])
    server.requests.clear()

    result = snakemake("-n", "fgs_raw")
    numbers = summary(result.stdout)
    assert numbers["fetch"] == (3, 2, 1, len(rows) - 3)
    assert numbers["download_bytes"] == sum(map(int, missing.size_bytes))
    assert not numbers["estimate"]  # the pinned table's sizes are exact
    for row in missing.itertuples():  # each file to fetch, with its size
        assert re.search(rf"^  {row.file_id} +[\d.]+ kB +[\d.]+ kB$", result.stdout, re.MULTILINE)
    assert "fgs_raw_guider2_1 " not in result.stdout
    assert server.requests == []


def test_preview_of_nircam_linearized_on_an_empty_tree(workdir, server):
    run = Snakemake(workdir, server.url)  # the shipped table, with Mirage's size estimates
    table = load_table(TABLE_CSV)
    nircam = table[table.instrument == "nircam"]
    estimate = sum(int(s) for s in nircam[nircam.dark_type != "raw"].size_bytes if s)

    numbers = summary(run("-n", "nircam_linearized").stdout)
    assert numbers["fetch"] == (57, 50, 7, 0)
    assert numbers["download"] == f"{estimate / 1e9:,.2f} GB" and numbers["estimate"]
    assert summary(run("-n", "nircam_linearized", config={"single_dark": True}).stdout)["fetch"] == (17, 10, 7, 0)
    assert server.requests == [] and not run.mirage_data.exists()


def test_status_reports_groups_and_instruments(snakemake, server, mirror, workdir):
    snakemake("fgs_raw")
    csv = workdir / "status.csv"
    result = snakemake("status", config={"status_csv": csv})
    assert "Status of" in result.stdout
    report = pd.read_csv(csv).set_index(["scope", "name"])
    table = load_table(mirror[2])
    fgs = table[table.instrument == "fgs"]
    raw = fgs[fgs.dark_type != "linearized"]
    assert tuple(report.loc[("group", "fgs_raw"), ["files_present", "files_missing"]]) == (len(raw), 0)
    assert report.loc[("group", "fgs_raw"), "bytes_present"] == sum(map(int, raw.unpacked_bytes))
    assert tuple(report.loc[("instrument", "fgs"), ["files_present", "files_missing"]]) == (len(raw), 8)
    missing = fgs[fgs.dark_type == "linearized"]
    assert report.loc[("instrument", "fgs"), "bytes_missing"] == sum(map(int, missing.size_bytes))
    assert report.loc[("instrument", "nircam"), "files_present"] == 0


def test_exact_sizes_from_the_server_feed_the_preview(workdir, server, mirror):
    table_csv = workdir / "table.csv"
    table_csv.write_text(TABLE_CSV.read_text())
    first = load_table(TABLE_CSV).path.iloc[0]
    server.faults[first] = Fault(statuses=[405])  # a server that will not answer HEAD for one file
    command = [sys.executable, "-m", "mirage_reffiles.sizes", "--table", str(table_csv), "--base-url", server.url]
    subprocess.run(command, check=True, cwd=REPO, capture_output=True)
    refreshed = load_table(table_csv)
    actual = {row.file_id: (mirror[0] / row.path).stat().st_size for row in refreshed.itertuples()}
    assert refreshed.size_bytes.astype(int).to_dict() == actual
    assert set(refreshed.size_exact) == {"true"} and refreshed.last_modified.str.endswith("GMT").all()
    assert [r.method for r in server.requests if r.path == first] == ["HEAD", "GET"]

    run = Snakemake(workdir, server.url, table_csv)
    numbers = summary(run("-n", "fgs_both").stdout)
    fgs = refreshed[refreshed.instrument == "fgs"]
    assert numbers["download_bytes"] == sum(actual[file_id] for file_id in fgs.file_id)
