import os
import re
import sys
from pathlib import Path

import yaml

# This workflow's folder, also when another workflow uses it as a module.
WORKFLOW_DIR = Path(str(workflow.current_basedir)).parent
# In a checkout the workflow uses the package beside it, installed or not
# (the report scripts are given the same path); installed from a wheel, the
# workflow is inside the package, which is importable already.
PACKAGE_ROOT = str(WORKFLOW_DIR / "src")
if Path(PACKAGE_ROOT, "mirage_reffiles").is_dir():
    sys.path.insert(0, PACKAGE_ROOT)

from mirage_reffiles.tree import layout
from mirage_reffiles.adapters import session
from mirage_reffiles.errors import ServerUnreachable, SpaceError, UsageError
from mirage_reffiles.tree.plan import make_plan
from mirage_reffiles.transfer.probe import probe_any
from mirage_reffiles.adapters.runtime import freeze, settle
from mirage_reffiles.adapters.settings import check_config, check_mirage_data
from mirage_reffiles.adapters.envfile import (
    export_lines,
    mirage_environment,
    write_env_file,
)
from mirage_reffiles.sources.mirage import (
    SKIP_FLAGS,
    combine_rows,
    load_table,
    mirage_group,
    select,
    select_group,
    standard_groups,
    vocabulary,
)
from mirage_reffiles.transfer.fetch import FetchRequest, fetch_logged
from mirage_reffiles.adapters.reports import (
    clear_for_repair,
    finish_repair,
    show_status,
    verify_tree,
)
from mirage_reffiles.transfer.http import (
    Expected,
    RetryPolicy,
    as_base_url,
    as_base_urls,
    as_url,
)

# Everything the user chose is checked now: a mistake ends the run with a few
# lines naming the fix, before any download.
try:
    with open(WORKFLOW_DIR / "config/schemas/config.schema.yaml") as handle:
        config.update(check_config(config, yaml.safe_load(handle)))
    session.begin(
        verbose=config["verbose"],
        interval=config["progress_interval"],
        main=workflow.modifier.is_main_snakefile(),
    )
    MIRAGE_DATA = check_mirage_data(
        config["mirage_data"] or os.environ.get("MIRAGE_DATA") or "mirage_data"
    )
    # Sources, primary first: a file comes from the first that has it.
    BASE_URLS = as_base_urls(config["base_url"] or layout.default_base_url())
    BASE_URL = BASE_URLS[0]
    OPTIONS = {key: config[key] for key in (*SKIP_FLAGS, "single_dark")}

    with open(WORKFLOW_DIR / "config/schemas/reference_files.schema.yaml") as handle:
        ROW_SCHEMA = yaml.safe_load(handle)
    TABLE_PATH = str(
        config["reference_table"] or WORKFLOW_DIR / "config/reference_files.csv"
    )
    TABLE = load_table(TABLE_PATH, schema=ROW_SCHEMA)

    # Every target group, checked now so a bad name or value fails before any download.
    GROUPS = {
        "all": mirage_group(config["instrument"], config["dark_type"]),
        **standard_groups(),
        **config["groups"],
    }
    SELECTIONS = {
        name: select(TABLE, group, OPTIONS, f"group {name!r}", vocabulary(ROW_SCHEMA))
        for name, group in GROUPS.items()
    }
except (UsageError, OSError) as error:
    raise session.refuse(error)

# Rows that target groups build beside the table's, shaped like its rows (plus
# their own `url`): previews, status, verify and repair take them alike. The
# grism folders add theirs.
EXTRA_ROWS = []

# Mirage's grism folders (mirage_reffiles.sources.grism; their rule: rules/grism.smk):
# targets nircam_grism and niriss_grism, and part of `all` with grism: true.
from mirage_reffiles.sources.grism import (
    GRISM_INSTRUMENTS,
    fetch_grism,
    grism_groups,
    grism_request,
    grism_rows,
    load_grism_table,
)

try:
    with open(WORKFLOW_DIR / "config/schemas/grism_files.schema.yaml") as handle:
        GRISM_TABLE = load_grism_table(
            config["grism_table"] or WORKFLOW_DIR / "config/grism_files.csv",
            schema=yaml.safe_load(handle),
        )
    GRISM_ROWS = grism_rows(
        GRISM_TABLE,
        {name: config[f"{name}_grism_version"] for name in GRISM_INSTRUMENTS},
        as_base_url(config["grism_base_url"] or layout.default_grism_base_url()),
    )
    for name, group in grism_groups().items():
        GROUPS[name] = group
        SELECTIONS[name] = select_group(GRISM_ROWS, group, f"group {name!r}")
except (UsageError, OSError) as error:
    raise session.refuse(error)

EXTRA_ROWS.append(GRISM_ROWS)
if config["grism"]:
    SELECTIONS["all"] = combine_rows(
        SELECTIONS["all"],
        GRISM_ROWS[GRISM_ROWS.instrument.isin(GROUPS["all"]["instrument"])],
    )


def get_grism_request(wildcards):
    """What the job for one grism folder must do (see mirage_reffiles.sources.grism.GrismRequest)."""
    return grism_request(
        GRISM_TABLE, GRISM_ROWS.loc[wildcards.grism], MIRAGE_DATA, get_retry_policy()
    )


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


def get_sources(row):
    """Every place a row's file may come from: its own `url`, else each base_url in order."""
    return [row["url"]] if row.get("url") else [url + row.path for url in BASE_URLS]


def get_target(row):
    return str(layout.target_path(MIRAGE_DATA, row))


ANNOUNCED = set()


def get_group_input(name):
    """The input function of target group ``name``.

    It runs while Snakemake builds the DAG, before any download: it shows
    what the group will fetch (each file, in a dry run) and stops a real run
    that would not fit in the free space, or whose server cannot be reached.
    """

    def get_group_targets(wildcards):
        if name not in ANNOUNCED:
            ANNOUNCED.add(name)
            clear_unusable_records(SELECTIONS[name])
            plan = make_plan(
                name, MIRAGE_DATA, SELECTIONS[name], config["keep_archives"]
            )
            print(plan.describe(per_file=workflow.dryrun), flush=True)
            if not workflow.dryrun and len(plan.missing):
                try:
                    if not config["ignore_free_space"]:
                        plan.check_fits()
                    plan.check_writable()
                    first = plan.missing.iloc[0]
                    probe_any(get_sources(first))
                except (SpaceError, UsageError, ServerUnreachable) as error:
                    raise session.refuse(error)
                session.plan(len(plan.missing), plan.size_bytes)
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


def get_retry_policy():
    """How patiently a job fetches (the settings retries, connect_timeout, ...)."""
    return RetryPolicy(
        retries=config["retries"],
        connect_timeout=config["connect_timeout"],
        read_timeout=config["read_timeout"],
        min_speed=config["min_speed"],
        stall_window=config["stall_window"],
        max_retry_after=config["max_retry_after"],
    )


def get_fetch_request(wildcards, input):
    """What the job for one row must do (see mirage_reffiles.transfer.fetch.FetchRequest)."""
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
        expected=Expected.of_row(row),
        kept_archive=layout.kept_archive_path(MIRAGE_DATA, row.path) if keep else None,
        download_to=(
            Path(DOWNLOADED.format(server_path=row.path)) if download_only else None
        ),
        policy=get_retry_policy(),
        kind=row.kind,
        instrument=row.instrument,
        reserved=frozenset(DARKS.destination),
        mirrors=() if unpack_only else tuple(url + row.path for url in BASE_URLS[1:]),
        connections=get_connection_cap(download_only),
        segment_size=int(config["segment_mb"] * 2**20),
    )


def get_retry_policy():
    return RetryPolicy(
        retries=config["retries"],
        connect_timeout=config["connect_timeout"],
        read_timeout=config["read_timeout"],
        min_speed=config["min_speed"],
        stall_window=config["stall_window"],
        max_retry_after=config["max_retry_after"],
    )


def get_connection_cap(download_only):
    """The `downloads` resource (profiles/default, --resources downloads=N): also the
    most connections this process opens at once (see mirage_reffiles.transfer.segments).

    Only jobs running as threads of this Snakemake process share that count;
    a cluster job, a process of its own, fetches on one connection (None).
    """
    if not workflow.is_main_process or not (workflow.local_exec or download_only):
        return None
    resources = workflow.global_resources
    cap = getattr(resources.get("downloads"), "value", resources.get("downloads"))
    return int(cap) if cap else None


def get_unknown_target(wildcards):
    raise session.refuse(
        UsageError(
            f"unknown target {wildcards.name!r}; the target groups are: {', '.join(GROUPS)}"
            " (add your own under 'groups' in config/config.yaml)"
        )
    )


def report_environment(log):
    """Write MIRAGE_DATA/mirage_env.sh and show the lines Mirage needs, after a build."""
    if not ANNOUNCED and not CRDS_PLANS:  # nothing was built (status, verify, ...)
        return
    # The offline lines once this build filled the CRDS cache for the context.
    filled = CRDS_PLANS or crds_cache.is_filled(CRDS_PATH, config["crds_context"])
    environment = mirage_environment(
        MIRAGE_DATA,
        config["crds_path"],
        config["crds_server_url"],
        crds_context=config["crds_context"] if filled else None,
    )
    path = write_env_file(MIRAGE_DATA, environment)
    if not config["announce_environment"]:
        return
    print(
        f"\nReference files are in {MIRAGE_DATA}. Point Mirage at them with:\n\n"
        f"{export_lines(environment)}\n(also written to {path}: `source {path}`)"
    )


def get_report_params(**extra):
    """What the reports (status, verify, repair) need to know of the build."""
    return {
        "mirage_data": str(MIRAGE_DATA),
        "table": TABLE_PATH,
        "selections": {name: list(rows.file_id) for name, rows in SELECTIONS.items()},
        "extra_rows": combine_rows(*EXTRA_ROWS).to_dict("records"),
        **extra,
    }


def get_repaired_targets(wildcards):
    """Targets of the rows `clear_damaged` cleared: fetching them again is the repair."""
    cleared = checkpoints.clear_damaged.get(run=REPAIR_RUN).output[0]
    with open(cleared) as handle:
        rows = combine_rows(TABLE, *EXTRA_ROWS)
        return [get_target(rows.loc[file_id]) for file_id in handle.read().split()]


# The bookkeeping's own checks (see mirage_reffiles.tree.records and .verify).
from mirage_reffiles.tree.records import remove_unusable_records, unusable_records

# Names this run's list of cleared rows: each `repair` checks the tree anew.
REPAIR_RUN = os.urandom(6).hex()


def get_unfinished_repairs(wildcards):
    """Lists that earlier repairs left behind (they failed before fetching all): carried over."""
    mine = f"cleared.{wildcards.run}.txt"
    return sorted(
        str(path) for path in Path("repair").glob("cleared.*.txt") if path.name != mine
    )


def clear_unusable_records(rows):
    """Remove the records of the tarballs among ``rows`` that cannot be used, so they are fetched again.

    A tarball's build target is its record: a garbled one would look done.
    Call it before the DAG is built; a dry run only says what it would
    remove. Returns the ``file_id`` of those records.
    """
    tarballs = rows.file_id[rows.archive == "tar.gz"]
    if workflow.dryrun:
        removed, busy = unusable_records(MIRAGE_DATA, tarballs), []
    else:
        removed, busy = remove_unusable_records(MIRAGE_DATA, tarballs)
    if removed:
        print(
            f"{'Would remove' if workflow.dryrun else 'Removed'} the unreadable records of "
            f"{', '.join(removed)}: to be fetched again",
            flush=True,
        )
    if busy:
        print(
            f"Left the unreadable records of {', '.join(busy)}: another run is fetching them",
            flush=True,
        )
    return removed
