# Settings and input functions of the crds targets (rules/crds.smk).
import glob

from mirage_reffiles.sources import crds as crds_cache
from mirage_reffiles.adapters.envfile import crds_path_of
from mirage_reffiles.errors import FetchError

CRDS_PATH = crds_path_of(config["crds_path"])
CRDS_MODES = config["crds_modes"] or (
    "" if config["crds_yaml_glob"] else str(WORKFLOW_DIR / "config/crds_modes.csv")
)
# Where the cache is filled from: as base_url, a variable can point elsewhere (a local stand-in).
CRDS_SOURCE_URL = (
    os.environ.get("MIRAGE_REFFILES_CRDS_URL") or config["crds_server_url"]
)
CRDS_INSTRUMENTS = [name.lower() for name in crds_cache.INSTRUMENTS]
CRDS_PLANS = {}


def get_crds_modes():
    """The observing modes of crds_modes and crds_yaml_glob."""
    yaml_files = glob.glob(os.path.expanduser(config["crds_yaml_glob"] or ""))
    if config["crds_yaml_glob"] and not yaml_files:
        raise UsageError(f"crds_yaml_glob {config['crds_yaml_glob']!r} matches no file")
    return crds_cache.gather_modes(CRDS_MODES, yaml_files)


def get_crds_status(wildcards):
    """The crds_status report: from the plan of these settings, with no server; or how to make one."""
    try:
        modes = get_crds_modes()
    except UsageError as error:
        raise session.refuse(error)
    plan_file = crds_cache.plan_path(
        CRDS_PATH, config["crds_context"], modes, config["crds_types"]
    )
    plan = crds_cache.read_plan(plan_file)
    if plan is None:
        return f"CRDS references in {CRDS_PATH}: none chosen yet for these settings (run `snakemake crds`)"
    return crds_cache.status_table(CRDS_PATH, plan[1])


def get_crds_plan():
    """``(reference_url, references)`` of the crds targets; made on the first call."""
    if not CRDS_PLANS:
        try:
            if not config["crds_context"]:
                raise UsageError(
                    "the crds target needs a pinned context: set crds_context (e.g. --config"
                    " crds_context=jwst_1322.pmap; https://jwst-crds.stsci.edu lists them)"
                )
            modes = get_crds_modes()
            args = (CRDS_PATH, config["crds_context"], modes, config["crds_types"])
            plan = crds_cache.read_plan(crds_cache.plan_path(*args))
            if plan is None and workflow.dryrun:
                print(
                    f"crds: would fetch the mappings of {config['crds_context']} into {CRDS_PATH}"
                    f" and choose the references of {len(modes)} modes (not known before a real run)",
                    flush=True,
                )
                return "", []
            if plan is None:
                plan = crds_cache.make_plan(
                    CRDS_PATH,
                    CRDS_SOURCE_URL,
                    config["crds_context"],
                    modes,
                    config["crds_types"],
                    policy=get_retry_policy(),
                )
        except (UsageError, ServerUnreachable, FetchError, OSError) as error:
            raise session.refuse(error)
        CRDS_PLANS["plan"] = plan
        text = crds_cache.describe_plan(CRDS_PATH, plan[1], per_file=workflow.dryrun)
        print(text, flush=True)
    return CRDS_PLANS["plan"]


def get_crds_references(instrument=None):
    """The input function of the crds target (of one instrument's references, with ``instrument``)."""

    def get_crds_targets(wildcards):
        return [
            str(crds_cache.reference_path(CRDS_PATH, ref.instrument, ref.name))
            for ref in get_crds_plan()[1]
            if instrument in (None, ref.instrument)
        ]

    return get_crds_targets


def get_crds_request(wildcards):
    reference_url, references = get_crds_plan()
    ref = next(ref for ref in references if ref.name == wildcards.reference)
    return {
        "crds_path": CRDS_PATH,
        "reference_url": reference_url,
        "name": ref.name,
        "instrument": ref.instrument,
        "size": ref.size,
        "sha1sum": ref.sha1sum,
        "policy": get_retry_policy(),
    }
