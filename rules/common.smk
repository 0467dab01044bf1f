import os
import re
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

# The workflow uses its own copy of the package, installed or not (the report
# scripts are given the same path).
PACKAGE_ROOT = str(Path(workflow.basedir) / "src")
sys.path.insert(0, PACKAGE_ROOT)

from mirage_reffiles import layout
from mirage_reffiles.plan import make_plan
from mirage_reffiles.runtime import freeze, settle
from mirage_reffiles.settings import coerce_flags
from mirage_reffiles.envfile import export_lines, mirage_environment, write_env_file
from mirage_reffiles.table import (
    SKIP_FLAGS,
    TableError,
    load_table,
    mirage_group,
    select,
    vocabulary,
)
from mirage_reffiles.fetch import FetchRequest, fetch_logged
from mirage_reffiles.transfer import Expected, RetryPolicy, as_base_url, as_url

with open(Path(workflow.basedir) / "config/schemas/config.schema.yaml") as handle:
    config.update(coerce_flags(config, yaml.safe_load(handle)))
validate(config, schema="../config/schemas/config.schema.yaml")

MIRAGE_DATA = (
    Path(config["mirage_data"] or os.environ.get("MIRAGE_DATA") or "mirage_data")
    .expanduser()
    .absolute()
)
BASE_URL = as_base_url(config["base_url"])
OPTIONS = {key: config[key] for key in (*SKIP_FLAGS, "single_dark")}

with open(
    Path(workflow.basedir) / "config/schemas/reference_files.schema.yaml"
) as handle:
    ROW_SCHEMA = yaml.safe_load(handle)
TABLE_PATH = str(
    config["reference_table"] or Path(workflow.basedir) / "config/reference_files.csv"
)
TABLE = load_table(TABLE_PATH, schema=ROW_SCHEMA)

# Every target group, checked now so a bad name or value fails before any download.
GROUPS = {
    "all": mirage_group(config["instrument"], config["dark_type"]),
    **config["groups"],
}
SELECTIONS = {
    name: select(TABLE, group, OPTIONS, f"group {name!r}", vocabulary(ROW_SCHEMA))
    for name, group in GROUPS.items()
}

DARKS = TABLE[TABLE.archive == "gz"].set_index("destination", drop=False)
TARBALLS = TABLE[TABLE.archive == "tar.gz"]
BY_PATH = TABLE.set_index("path", drop=False)

# With downloads_on_submit_host, where the submit host puts each download for
# a cluster job to unpack: the kept archive, or a file deleted once unpacked.
if config["keep_archives"]:
    DOWNLOADED = f"{MIRAGE_DATA}/{layout.ARCHIVE_DIR}/{{server_path}}"
else:
    DOWNLOADED = f"{MIRAGE_DATA}/{layout.STATE_DIR}/downloaded/{{server_path}}"

# Everything loaded so far (Snakemake, pandas, the table) lives as long as the
# run: keep the garbage collector from walking it again and again.
freeze()


def one_of(values):
    """A regex matching exactly the given values (and nothing when there are none)."""
    return (
        "(?:" + "|".join(map(re.escape, sorted(set(values)))) + ")"
        if len(values)
        else "(?!)"
    )


# Built from the table's own values; shapes rather than one long alternation
# of every path, which Snakemake would compile over and over.
wildcard_constraints:
    dark=(
        f"{one_of(DARKS.instrument)}/darks/{one_of(DARKS.dark_type)}/"
        r"(?:[AB][1-5]/)?[^/]+\.fits"
    ),
    tarball=one_of(TARBALLS.file_id),
    server_path=f"{one_of(TABLE.instrument)}/[^\\s]+\\.gz",


def get_target(row):
    return str(layout.target_path(MIRAGE_DATA, row))


ANNOUNCED = set()


def get_group_input(name):
    """The input function of target group ``name``.

    It runs while Snakemake builds the DAG, before any download: it shows
    what the group will fetch (each file, in a dry run) and stops a real run
    that would not fit in the free space.
    """

    def get_group_targets(wildcards):
        if name not in ANNOUNCED:
            ANNOUNCED.add(name)
            plan = make_plan(
                name, MIRAGE_DATA, SELECTIONS[name], config["keep_archives"]
            )
            print(plan.describe(per_file=workflow.dryrun), flush=True)
            if not workflow.dryrun and not config["ignore_free_space"]:
                plan.check_fits()
        return [get_target(row) for row in SELECTIONS[name].itertuples()]

    return get_group_targets


def get_row(wildcards):
    if "dark" in wildcards.keys():
        return DARKS.loc[wildcards.dark]
    if "server_path" in wildcards.keys():
        return BY_PATH.loc[wildcards.server_path]
    return TARBALLS.loc[wildcards.tarball]


def get_downloaded(wildcards):
    """With downloads_on_submit_host, the archive a fetch job unpacks; else nothing."""
    if not config["downloads_on_submit_host"]:
        return []
    return DOWNLOADED.format(server_path=get_row(wildcards).path)


def get_fetch_request(wildcards, input):
    """What the job for one row must do (see mirage_reffiles.fetch.FetchRequest)."""
    row = get_row(wildcards)
    download_only = "server_path" in wildcards.keys()
    unpack_only = config["downloads_on_submit_host"] and not download_only
    keep = config["keep_archives"] and not unpack_only and not download_only
    return FetchRequest(
        url=as_url(input.archive) if unpack_only else BASE_URL + row.path,
        mirage_data=MIRAGE_DATA,
        file_id=row.file_id,
        archive=row.archive,
        destination=row.destination,
        expected=Expected(
            size=int(row.size_bytes) if row.size_exact == "true" else None,
            sha256=row.sha256 or None,
        ),
        kept_archive=layout.kept_archive_path(MIRAGE_DATA, row.path) if keep else None,
        download_to=(
            Path(DOWNLOADED.format(server_path=row.path)) if download_only else None
        ),
        policy=RetryPolicy(
            retries=config["retries"],
            connect_timeout=config["connect_timeout"],
            read_timeout=config["read_timeout"],
        ),
    )


def get_unknown_target(wildcards):
    raise TableError(
        f"unknown target {wildcards.name!r}; the target groups are: {', '.join(GROUPS)}"
        " (add your own under 'groups' in config/config.yaml)"
    )


def report_environment(log):
    """Write MIRAGE_DATA/mirage_env.sh and show the lines Mirage needs, after a build."""
    if not ANNOUNCED:  # no target group was built (status, verify, ...)
        return
    environment = mirage_environment(
        MIRAGE_DATA, config["crds_path"], config["crds_server_url"]
    )
    path = write_env_file(MIRAGE_DATA, environment)
    print(
        f"\nReference files are in {MIRAGE_DATA}. Point Mirage at them with:\n\n"
        f"{export_lines(environment)}\n(also written to {path}: `source {path}`)"
    )


def get_report_params(**extra):
    """What the report scripts (status, verify, repair) need to know of the build."""
    return {
        "package": PACKAGE_ROOT,
        "mirage_data": str(MIRAGE_DATA),
        "table": TABLE_PATH,
        "selections": {name: list(rows.file_id) for name, rows in SELECTIONS.items()},
        **extra,
    }


def get_repaired_targets(wildcards):
    """Targets of the rows `find_damaged` cleared: fetching them again is the repair."""
    with checkpoints.clear_damaged.get().output[0].open() as handle:
        return [get_target(TABLE.loc[file_id]) for file_id in handle.read().split()]
