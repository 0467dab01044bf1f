# Settings and input functions. Every source (Mirage's table, the grism
# repositories, a CRDS context) is rows of one shape in CATALOG
# (mirage_reffiles.sources.catalog); the functions here only hand rows to
# Snakemake and to the jobs.
import os
import re
import sys
from pathlib import Path

import yaml

# This workflow's folder, also when another workflow uses it as a module.
WORKFLOW_DIR = Path(str(workflow.current_basedir)).parent
# In a checkout the workflow uses the package beside it, installed or not;
# installed from a wheel, the workflow is inside the package, importable already.
if Path(WORKFLOW_DIR, "src", "mirage_reffiles").is_dir():
    sys.path.insert(0, str(WORKFLOW_DIR / "src"))

from mirage_reffiles.adapters import session
from mirage_reffiles.adapters.envfile import (
    export_lines,
    mirage_environment,
    write_env_file,
)
from mirage_reffiles.adapters.reports import (
    clear_for_repair,
    finish_repair,
    show_status,
    verify_tree,
)
from mirage_reffiles.adapters.runtime import freeze, settle
from mirage_reffiles.adapters.settings import check_config, check_mirage_data
from mirage_reffiles.errors import FetchError, ServerUnreachable, SpaceError, UsageError
from mirage_reffiles.sources import crds, rows, vega, webbpsf
from mirage_reffiles.sources.catalog import Catalog, retry_policy
from mirage_reffiles.sources.grism import fetch_grism, grism_request
from mirage_reffiles.transfer.fetch import (
    FetchRequest,
    fetch,
    fetch_logged,
    fetch_member,
)
from mirage_reffiles.transfer.http import Expected, as_url
from mirage_reffiles.transfer.probe import probe_any
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.plan import make_plan
from mirage_reffiles.tree.records import (
    read_record,
    remove_unusable_records,
    unusable_records,
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
    CATALOG = Catalog(config, WORKFLOW_DIR, MIRAGE_DATA)
except (UsageError, OSError) as error:
    raise session.refuse(error)

GROUPS = CATALOG.groups
CRDS_PATH = CATALOG.crds_path
TABLE = CATALOG.rows[CATALOG.rows.source == "mirage"]
DARKS = TABLE[TABLE.archive == "gz"].set_index("destination", drop=False)
TARBALLS = TABLE[TABLE.archive == "tar.gz"]
# The folders tarballs and grism folders unpack into: a file there is asked for by path.
LANES = CATALOG.rows.lane[
    (CATALOG.rows.archive == "tar.gz") & (CATALOG.rows.root == str(MIRAGE_DATA))
]
BY_PATH = TABLE.set_index("path", drop=False)

# With downloads_on_submit_host, where the submit host puts each download for
# a cluster job to unpack: the kept archive, or a file deleted once unpacked.
if config["keep_archives"]:
    DOWNLOADED = f"{MIRAGE_DATA}/{layout.ARCHIVE_DIR}/{{server_path}}"
else:
    DOWNLOADED = f"{MIRAGE_DATA}/{layout.STATE_DIR}/downloaded/{{server_path}}"

# Names this run's list of cleared rows: each `repair` checks the trees anew.
REPAIR_RUN = os.urandom(6).hex()
REPAIR_DIR = ".snakemake/reffiles/repair"

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


# Built from the rows' own values; shapes rather than one long alternation
# of every path, which Snakemake would compile over and over.
wildcard_constraints:
    dark=(
        f"{one_of(DARKS.instrument)}/darks/{one_of(DARKS.dark_type)}/"
        r"(?:[AB][1-5]/)?[^/]+\.fits"
    ),
    tarball=one_of(TARBALLS.file_id),
    server_path=f"{one_of(TABLE.instrument)}/[^\\s]+\\.gz",
    member=f"{one_of(LANES)}/[^\\s]+",


ANNOUNCED = set()


def get_group_input(name):
    """The input function of target group ``name``.

    It runs while Snakemake builds the DAG, before any download: it shows
    what the group will fetch (each file, in a dry run) and stops a real run
    that would not fit in the free space, or whose server cannot be reached.
    """

    def get_group_targets(wildcards):
        try:
            if CATALOG.needs_crds(name):
                CATALOG.plan_crds(workflow.dryrun, retry_policy(config))
            selection = CATALOG.selections[name]
            if name not in ANNOUNCED:
                ANNOUNCED.add(name)
                clear_unusable_records(selection)
                for line in CATALOG.clear_outdated(selection, workflow.dryrun):
                    print(line, flush=True)
                plan = make_plan(name, selection, config["keep_archives"])
                print(plan.describe(per_file=workflow.dryrun), flush=True)
                if not workflow.dryrun and len(plan.missing):
                    if not config["ignore_free_space"]:
                        plan.check_fits()
                    plan.check_writable()
                    CATALOG.check_tools(plan.missing)
                    probe_any(rows.urls(plan.missing.iloc[0]))
                    session.plan(plan.missing)
        except (
            SpaceError,
            UsageError,
            ServerUnreachable,
            FetchError,
            OSError,
        ) as error:
            raise session.refuse(error)
        return [str(layout.target_path(row)) for row in selection.itertuples()]

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
    """What the job for one row must do (see mirage_reffiles.transfer.fetch.FetchRequest)."""
    download_only = "server_path" in wildcards.keys()
    unpack_only = config["downloads_on_submit_host"] and not download_only
    return fetch_request(
        get_row(wildcards), as_url(input.archive) if unpack_only else "", download_only
    )


def fetch_request(row, archive="", download_only=False):
    """The request that fetches ``row`` (of Mirage's table): from its sources, or unpacking ``archive``."""
    keep = config["keep_archives"] and not archive and not download_only
    sources = rows.urls(row)
    return FetchRequest(
        url=archive or sources[0],
        mirage_data=MIRAGE_DATA,
        file_id=row.file_id,
        archive=row.archive,
        destination=row.destination,
        expected=Expected.of_row(row),
        kept_archive=layout.kept_archive_path(MIRAGE_DATA, row.path) if keep else None,
        download_to=(
            Path(DOWNLOADED.format(server_path=row.path)) if download_only else None
        ),
        policy=retry_policy(config),
        kind=row.kind,
        instrument=row.instrument,
        claimed=dict(zip(DARKS.destination, DARKS.file_id)),
        mirrors=() if archive else tuple(sources[1:]),
        connections=get_connection_cap(download_only),
        segment_size=int(config["segment_mb"] * 2**20),
    )


def get_grism_request(wildcards):
    """What the job for one grism folder must do (see mirage_reffiles.sources.grism.GrismRequest)."""
    return grism_fetch_request(wildcards.grism)


def grism_fetch_request(file_id):
    row = CATALOG.rows.loc[file_id]
    return grism_request(CATALOG.grism_table, row, MIRAGE_DATA, retry_policy(config))


def get_webbpsf_request(wildcards):
    """What the job for WebbPSF's data must do (see mirage_reffiles.sources.webbpsf.WebbpsfRequest)."""
    return webbpsf_fetch_request(webbpsf.WEBBPSF_FILE_ID)


def webbpsf_fetch_request(file_id):
    row = CATALOG.rows.loc[file_id]
    return webbpsf.request(row, CATALOG.webbpsf_reader, retry_policy(config))


def get_vega_request(wildcards):
    """What the job for the Vega spectrum must do (see mirage_reffiles.sources.vega.VegaRequest)."""
    return vega.request(CATALOG.rows.loc[vega.VEGA_FILE_ID], retry_policy(config))


def get_crds_request(wildcards):
    """What the job for one CRDS reference must do (see mirage_reffiles.sources.crds.ReferenceRequest)."""
    if CATALOG.crds_plan is None:
        CATALOG.plan_crds(workflow.dryrun, retry_policy(config))
    row = CATALOG.rows.loc[wildcards.reference]
    return crds.request(row, CATALOG.crds_plan[0], retry_policy(config))


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


def get_member_fetches(wildcards):
    """How to fetch the tarball (or grism folder) whose lane holds a file asked for by path.

    Where several tarballs share the lane, the one whose record lists the
    file first (their members are not known before they are fetched).
    """
    candidates = rows.lane_of(CATALOG.rows, MIRAGE_DATA, wildcards.member)
    listed = [
        row.file_id
        for row in candidates.itertuples()
        if (record := read_record(MIRAGE_DATA, row.file_id))
        and wildcards.member in {item.path for item in record.files}
    ]
    ordered = candidates.loc[listed + [i for i in candidates.index if i not in listed]]
    fetchers = {
        "grism": (fetch_grism, grism_fetch_request),
        "webbpsf": (webbpsf.fetch_webbpsf, webbpsf_fetch_request),
    }
    return [
        (
            (fetchers[row.source][0], fetchers[row.source][1](row.file_id))
            if row.source in fetchers
            else (fetch, fetch_request(row))
        )
        for row in ordered.itertuples()
    ]


def get_unknown_target(wildcards):
    raise session.refuse(
        UsageError(
            f"unknown target {wildcards.name!r}; the target groups are: {', '.join(GROUPS)}"
            " (add your own under 'groups' in config/config.yaml), or a file by its path"
        )
    )


def report_environment(log):
    """Write MIRAGE_DATA/mirage_env.sh and show the lines Mirage needs, after a build."""
    if not ANNOUNCED:  # nothing was built (status, verify, ...)
        return
    # The offline lines once this build filled the CRDS cache for the context.
    filled = CATALOG.crds_plan or crds.is_filled(CRDS_PATH, config["crds_context"])
    environment = mirage_environment(
        MIRAGE_DATA,
        config["crds_path"],
        config["crds_server_url"],
        crds_context=config["crds_context"] if filled else None,
    )
    environment.update(CATALOG.simulation_environment())
    path = write_env_file(MIRAGE_DATA, environment)
    if not config["announce_environment"]:
        return
    print(
        f"\nReference files are in {MIRAGE_DATA}. Point Mirage at them with:\n\n"
        f"{export_lines(environment)}\n(also written to {path}: `source {path}`)"
    )


def get_report_rows(wildcards):
    """Every row the reports cover (a CRDS context's once a plan was made), as plain records."""
    return CATALOG.report_rows().to_dict("records")


def get_report_selections(wildcards):
    return CATALOG.report_selections()


def get_report_notes(wildcards):
    """What a report cannot cover: a CRDS context whose references are not chosen yet."""
    if not config["crds_context"] or CATALOG.saved_crds_plan():
        return []
    return [
        f"CRDS references of {config['crds_context']} in {CRDS_PATH}: none chosen yet for these"
        " settings (`snakemake -n crds` lists them; `snakemake crds` fetches them)"
    ]


def get_repaired_targets(wildcards):
    """Targets of the rows `clear_damaged` cleared: fetching them again is the repair."""
    cleared = checkpoints.clear_damaged.get(run=REPAIR_RUN).output[0]
    with open(cleared) as handle:
        every = CATALOG.report_rows()
        return [
            str(layout.target_path(every.loc[file_id]))
            for file_id in handle.read().split()
        ]


def get_unfinished_repairs(wildcards):
    """Lists that earlier repairs left behind (they failed before fetching all): carried over."""
    mine = f"cleared.{wildcards.run}.txt"
    return sorted(
        str(path)
        for path in Path(REPAIR_DIR).glob("cleared.*.txt")
        if path.name != mine
    )


def clear_unusable_records(selection):
    """Remove the records among ``selection`` that cannot be used, so they are fetched again.

    A tarball's build target is its record (and the Vega spectrum's): a garbled one would look done.
    Call it before the DAG is built; a dry run only says what it would
    remove. Returns the ``file_id`` of those records.
    """
    removed, busy = [], []
    recorded = [layout.is_recorded_target(row) for row in selection.itertuples()]
    for root, chosen in selection[recorded].groupby("root"):
        if workflow.dryrun:
            removed += unusable_records(Path(root), chosen.file_id)
        else:
            gone, taken = remove_unusable_records(Path(root), chosen.file_id)
            removed, busy = removed + gone, busy + taken
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
