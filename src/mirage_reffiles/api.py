"""Mirage's ``download_reffiles()``, as a build of this workflow.

    >>> from mirage_reffiles import download_reffiles
    >>> download_reffiles("/data/mirage", instrument="nircam", single_dark=True)  # doctest: +SKIP

Runs the workflow (Snakefile beside this package's source) through
Snakemake's Python API, with the settings of its workflow profile
(``profiles/default``), exactly as ``snakemake`` on the command line would.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from mirage_reffiles.adapters import session
from mirage_reffiles.adapters.runtime import hold, unsettle
from mirage_reffiles.errors import RunRefused, UsageError, WorkflowNotFound
from mirage_reffiles.sources.mirage import load_table, mirage_group
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.http import as_base_urls
from mirage_reffiles.tree.adopt import adopt_mirage_tree
from mirage_reffiles.tree.layout import SHIPPED_TABLE, WORKFLOW_DIR, default_base_url


def workflow_dir() -> Path:
    if not (WORKFLOW_DIR / "Snakefile").is_file():
        raise WorkflowNotFound(
            f"the workflow (Snakefile, rules/, config/) is not beside the package at {WORKFLOW_DIR}: "
            "install from a checkout of the repository with `pip install -e .`"
        )
    return WORKFLOW_DIR


def profile_settings(profile: Path) -> dict:
    """The workflow profile's settings, as keyword arguments of Snakemake's settings classes."""
    from snakemake.settings.enums import RerunTrigger

    values = yaml.safe_load(profile.read_text())
    known = {"rerun-triggers", "resources", "cores", "ignore-incomplete", "nolock", "force-use-threads"}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{profile}: download_reffiles() does not apply {sorted(unknown)}; teach it to")
    return {
        "rerun_triggers": {RerunTrigger.parse_choice(t) for t in values.get("rerun-triggers", [])},
        "resources": {name: int(value) for name, value in (r.split("=", 1) for r in values.get("resources", []))},
        "ignore_incomplete": bool(values.get("ignore-incomplete", False)),
        "lock": not values.get("nolock", False),
        "use_threads": bool(values.get("force-use-threads", False)),
    }


def download_reffiles(
    directory: str | Path,
    instrument: str = "all",
    dark_type: str = "linearized",
    skip_darks: bool = False,
    single_dark: bool = False,
    skip_cosmic_rays: bool = False,
    skip_psfs: bool = False,
    skip_soss: bool = False,
    *,
    cores: int = 8,
    base_url: str | list[str] | None = None,
    dry_run: bool = False,
    remove_mirage_archives: bool = False,
    webbpsf: bool = False,
    vega: bool = False,
    config: dict | None = None,
) -> Path:
    """Download Mirage's reference files into ``directory/mirage_data``.

    The arguments mean what they mean in ``mirage.reference_files.downloader.
    download_reffiles``; ``cores`` is how many jobs run at once, ``base_url``
    where the files are served (``https://``, ``file://`` or a folder;
    default ``$MIRAGE_REFFILES_BASE_URL``, else STScI's server), and
    ``dry_run`` shows what would be fetched without fetching. A tree that
    Mirage's own downloader left in ``directory`` is adopted first: what is
    complete is not fetched again (its ``.gz``/``.tar.gz`` copies are deleted
    only with ``remove_mirage_archives``). ``webbpsf`` also fetches WebbPSF's
    data (into ``MIRAGE_DATA/webbpsf-data``, ``WEBBPSF_PATH``), ``vega`` puts
    the Vega spectrum into an astropy cache (``MIRAGE_DATA/astropy-cache``,
    ``ASTROPY_CACHE_DIR``): what a simulation downloads besides; both are set
    in ``mirage_env.sh``. ``config`` sets any other key of
    ``config/config.yaml`` (say ``keep_archives``). Returns MIRAGE_DATA, after
    the build has printed the ``export MIRAGE_DATA=...`` line for Mirage.

    Raises, before anything is downloaded: :class:`~mirage_reffiles.errors.UsageError`
    (a ``ValueError``) naming the valid choices for a bad instrument, dark
    type, setting, ``cores`` or ``directory`` (a file); :class:`~mirage_reffiles.errors.SpaceError` when the
    build does not fit (``config={"ignore_free_space": True}`` starts it
    anyway); :class:`~mirage_reffiles.errors.ServerUnreachable` when
    ``base_url`` cannot be reached. A failed download ends it with
    ``snakemake``'s ``WorkflowError`` (the per-file logs say why). On
    Ctrl-C (or SIGTERM, SIGHUP) the running downloads stop at a point they
    resume from, and ``KeyboardInterrupt`` is raised once they have.
    """
    mirage_group(instrument, dark_type)  # fails fast, naming the valid choices
    if not isinstance(cores, int) or cores < 1:
        raise UsageError(f"cores is how many jobs run at once: a whole number, at least 1 (not {cores!r})")
    directory = Path(directory).expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} is a file, not a folder; give the folder to download into")
    directory.mkdir(parents=True, exist_ok=True)
    mirage_data = directory / "mirage_data"
    workflow = workflow_dir()
    profile = profile_settings(workflow / "profiles" / "default" / "config.yaml")
    build_config = {
        **(config or {}),
        "mirage_data": str(mirage_data),
        "base_url": base_url or "",
        "instrument": instrument,
        "dark_type": dark_type,
        "skip_darks": skip_darks,
        "single_dark": single_dark,
        "skip_cosmic_rays": skip_cosmic_rays,
        "skip_psfs": skip_psfs,
        "skip_soss": skip_soss,
        "webbpsf": webbpsf,
        "vega": vega,
    }
    if mirage_data.is_dir() and not dry_run:
        table = build_config.get("reference_table") or SHIPPED_TABLE
        adoption = adopt_mirage_tree(
            directory, load_table(table), as_base_urls(base_url or default_base_url())[0], remove_mirage_archives
        )
        if adoption.adopted or adoption.leftovers:
            print(adoption.describe(removed=remove_mirage_archives))
    session.QUIET = True  # errors reach the caller as exceptions, not as printed lines
    hold()  # no garbage collection while Snakemake is imported and the workflow read (its freeze() ends this)
    try:
        from snakemake.api import SnakemakeApi
        from snakemake.settings.types import (
            ConfigSettings,
            DAGSettings,
            ExecutionSettings,
            OutputSettings,
            ResourceSettings,
        )

        with SnakemakeApi(OutputSettings()) as api:
            workflow_api = api.workflow(
                resource_settings=ResourceSettings(cores=cores, resources=profile["resources"]),
                config_settings=ConfigSettings(config=build_config),
                snakefile=workflow / "Snakefile",
                workdir=directory,
            )
            dag_api = workflow_api.dag(
                dag_settings=DAGSettings(
                    targets={"all"},
                    rerun_triggers=profile["rerun_triggers"],
                )
            )
            dag_api.execute_workflow(
                executor="local",
                pseudo_executor="dryrun" if dry_run else None,
                execution_settings=ExecutionSettings(
                    lock=profile["lock"],
                    use_threads=profile["use_threads"],
                    ignore_incomplete=profile["ignore_incomplete"],
                ),
            )
    except RunRefused as refused:
        raise refused.error from None
    except Exception:
        if interrupt.requested():
            raise KeyboardInterrupt(session.stopped_line()) from None
        raise
    finally:
        session.QUIET = False
        unsettle()  # the workflow set its objects aside from garbage collection; this process goes on
    return mirage_data
