"""The table selects what Mirage's own downloader selects.

The oracle below re-states Mirage's download_reffiles() rules over the facts
table read from Mirage's source (tests/data/mirage_downloader_urls.csv),
independently of the package: same arguments, same URLs; the one intended
difference is single_dark for FGS, which also gets a GUIDER1 dark.
"""

import itertools

import pandas as pd
import pytest

from conftest import REPO
from mirage_reffiles.sources.mirage import (
    TableError,
    mirage_group,
    parse_instruments,
    select,
    select_group,
    standard_groups,
)

BASE_URL = "https://data.science.stsci.edu/redirect/JWST/jwst-simulations/mirage_reference_files/"
FLAGS = ("skip_darks", "single_dark", "skip_cosmic_rays", "skip_psfs", "skip_soss")
FACTS = pd.read_csv(REPO / "tests/data/mirage_downloader_urls.csv", dtype=str, keep_default_na=False)


def mirage_urls(instrument="all", dark_type="linearized", **flags):
    instruments = ["nircam", "niriss", "fgs"] if instrument == "all" else instrument.split(",")
    dark_types = {"linearized": ["linearized"], "raw": ["raw"], "both": ["raw", "linearized"]}[dark_type]
    urls = set()
    for row in FACTS[FACTS.instrument.isin(instruments)].itertuples():
        if row.kind == "dark":
            if flags.get("skip_darks") or row.dark_type not in dark_types:
                continue
            if flags.get("single_dark") and row.single_dark != "true":
                continue
        elif row.skip_flag != "none" and flags.get(row.skip_flag):
            continue
        urls.add(row.url)
    return urls


def fgs_guider1_picks(instrument, dark_type, **flags):
    """The first GUIDER1 (_497_) dark of each FGS dark type: what single_dark adds for FGS."""
    if not flags.get("single_dark") or flags.get("skip_darks") or not {"all", "fgs"} & set(instrument.split(",")):
        return set()
    dark_types = {"linearized": ["linearized"], "raw": ["raw"], "both": ["raw", "linearized"]}[dark_type]
    picks = set()
    for kind in dark_types:
        darks = FACTS[(FACTS.instrument == "fgs") & (FACTS.dark_type == kind) & FACTS.filename.str.contains("_497_")]
        picks.add(darks.url.iloc[0])
    return picks


def our_urls(table, group, flags):
    return {BASE_URL + path for path in select(table, group, flags).path}


def test_table_has_every_file_mirage_knows(table):
    assert {BASE_URL + path for path in table.path} == set(FACTS.url)


@pytest.mark.parametrize("instrument", ["nircam", "niriss", "fgs"])
@pytest.mark.parametrize("dark_type", ["linearized", "raw", "both"])
def test_shipped_groups_match_mirage(table, config, instrument, dark_type):
    group = standard_groups()[f"{instrument}_{dark_type}"]
    assert our_urls(table, group, {}) == mirage_urls(instrument, dark_type)


@pytest.mark.parametrize(
    "flags", [dict(zip(FLAGS, values, strict=True)) for values in itertools.product([False, True], repeat=5)]
)
@pytest.mark.parametrize(
    ("instrument", "dark_type"), [("all", "linearized"), ("nircam,fgs", "both"), ("niriss", "raw")]
)
def test_mirage_keywords_match_mirage(table, instrument, dark_type, flags):
    expected = mirage_urls(instrument, dark_type, **flags) | fgs_guider1_picks(instrument, dark_type, **flags)
    assert our_urls(table, mirage_group(instrument, dark_type), flags) == expected


def test_single_dark_gives_one_dark_per_detector_and_guider(table):
    darks = select(table, mirage_group("all", "linearized"), {"single_dark": True})
    darks = darks[darks.kind == "dark"]
    assert sorted(darks[darks.instrument == "nircam"].detector) == [f"{m}{n}" for m in "AB" for n in range(1, 6)]
    assert len(darks[darks.instrument == "niriss"]) == 1
    assert sorted(darks[darks.instrument == "fgs"].detector) == ["1", "2"]


def test_user_group_on_detectors(table):
    rows = select_group(table, {"instrument": ["nircam"], "dark_type": ["linearized"], "detector": ["A1", "A2"]})
    darks = rows[rows.kind == "dark"]
    assert set(darks.detector) == {"A1", "A2"} and len(darks) == 10
    assert set(rows[rows.kind != "dark"].instrument) == {"nircam"}


@pytest.mark.parametrize(
    ("group", "words"),
    [
        ({"instrument": ["miri"]}, ["unknown instrument 'miri'", "fgs, nircam, niriss"]),
        ({"dark_type": ["cooked"]}, ["unknown dark_type 'cooked'", "linearized, raw"]),
        ({"colour": ["red"]}, ["cannot select on 'colour'", "instrument, kind"]),
    ],
)
def test_bad_group_names_the_valid_choices(table, group, words):
    with pytest.raises(TableError) as error:
        select_group(table, group, name="group 'mine'")
    for word in words:
        assert word in str(error.value)


def test_bad_keywords_name_the_valid_choices():
    with pytest.raises(TableError, match=r"unknown instrument 'miri'.*'all'.*nircam, niriss, fgs"):
        parse_instruments("nircam,miri")
    with pytest.raises(TableError, match=r"unknown dark_type 'linear'; choose one of linearized, raw, both"):
        mirage_group("all", "linear")
