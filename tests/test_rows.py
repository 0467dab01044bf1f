"""Rows of one shape from every source: claims, lanes, and what the display counts (no Snakemake)."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from mirage_reffiles.adapters.display import Display
from mirage_reffiles.adapters.settings import check_config
from mirage_reffiles.errors import TableError
from mirage_reffiles.sources import rows
from mirage_reffiles.sources.catalog import Catalog
from mirage_reffiles.transfer.progress import Board, Progress


def row(file_id: str, **values) -> dict:
    return {"file_id": file_id, "root": "/data", "archive": "gz", "destination": f"fgs/darks/raw/{file_id}.fits",
            **values}  # fmt: skip


def test_two_rows_may_not_share_an_id_or_a_file():
    with pytest.raises(TableError, match="file_id 'a' appears in more than one row"):
        rows.combine(rows.frame([row("a")]), rows.frame([row("a", destination="x.fits")]))
    with pytest.raises(TableError, match=r"rows .a. and .b. both write fgs/darks/raw/a\.fits"):
        rows.combine(rows.frame([row("a")]), rows.frame([row("b", destination="fgs/darks/raw/a.fits")]))
    other_tree = rows.frame([row("b", destination="fgs/darks/raw/a.fits", root="/crds")])
    assert list(rows.combine(rows.frame([row("a")]), other_tree).file_id) == ["a", "b"]


def test_a_path_belongs_to_the_innermost_lane_of_its_tree():
    tarballs = rows.frame(
        [
            row("library", archive="tar.gz", destination="", lane="nircam/gridded_psf_library"),
            row("wings", archive="tar.gz", destination="", lane="nircam/gridded_psf_library/psf_wings"),
            row("elsewhere", archive="tar.gz", destination="", lane="nircam/gridded_psf_library", root="/other"),
        ]
    )
    assert list(rows.lane_of(tarballs, "/data", "nircam/gridded_psf_library/a.fits").file_id) == ["library"]
    assert list(rows.lane_of(tarballs, "/data", "nircam/gridded_psf_library/psf_wings/w.fits").file_id) == ["wings"]
    assert rows.lane_of(tarballs, "/data", "nircam/darks/raw/A1/d.fits").empty


def test_the_display_counts_a_download_at_the_size_its_server_announced():
    board = Board()
    display = Display(tty=False, board=board)
    display.plan({"small": 39_000_000_000, "other": 5_000})  # the table's estimates
    assert display.total_bytes == 39_000_005_000
    progress = Progress("small", on_board=False)
    board.add(progress)
    progress.total = 1_000  # what the server announced
    assert display.total_bytes == 6_000
    progress.update(1_000)
    board.remove(progress, finished=True)
    assert display.total_bytes == 6_000 and display.files == 2


def test_the_catalog_makes_rows_of_every_source(tmp_path):
    schema = yaml.safe_load((REPO / "config/schemas/config.schema.yaml").read_text())
    config = check_config({"base_url": "http://127.0.0.1:9/ http://127.0.0.1:8/", "crds_path": str(tmp_path)}, schema)
    catalog = Catalog(config, REPO, tmp_path / "mirage_data")
    every = catalog.rows
    assert set(every.source) == {"mirage", "grism", "webbpsf", "vega"}
    assert (every.root == str(tmp_path / "mirage_data")).all()
    assert every.loc["webbpsf_data"].lane == "webbpsf-data" and every.loc["vega"].lane == "astropy-cache"
    dark = every.loc["fgs_raw_guider1_1"]
    assert rows.urls(dark) == [f"http://127.0.0.1:{port}/{dark.path}" for port in (9, 8)]
    assert every.loc["mirage_fgs_cr_library"].lane == "fgs/cosmic_ray_library"
    assert {"crds", "crds_nircam", "nircam_grism", "nircam_linearized", "webbpsf", "vega", "simulation"} <= set(
        catalog.groups
    )
    assert not catalog.saved_crds_plan()  # no context chosen: no CRDS rows, and no server asked
