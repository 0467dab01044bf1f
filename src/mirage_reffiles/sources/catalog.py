"""Every source's rows for one build's settings: what the targets, previews and reports read.

The workflow makes one :class:`Catalog` from its checked settings. It turns
each source (Mirage's table, the grism repositories, a CRDS context) into rows
of the one shape (:mod:`.rows`) and names the target groups over them. A
CRDS context's rows are known only once its plan is made or read back
(:meth:`Catalog.plan_crds`); reports use a plan made earlier and never ask a
server.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml

from mirage_reffiles.adapters.envfile import crds_path_of, simulation_environment
from mirage_reffiles.errors import UsageError
from mirage_reffiles.sources import crds, grism, mirage, rows, vega, webbpsf
from mirage_reffiles.transfer.http import RetryPolicy, as_base_url, as_base_urls, as_url
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.records import read_record

#: The environment variable that points the crds targets at another server (a local stand-in).
CRDS_URL_VARIABLE = "MIRAGE_REFFILES_CRDS_URL"

#: The crds target groups: all references, or one instrument's.
CRDS_GROUPS = {"crds": {}, **{f"crds_{name.lower()}": {"instrument": [name.lower()]} for name in crds.INSTRUMENTS}}

#: What else a simulation reads, one group each: WebbPSF's data, the Vega spectrum in astropy's cache.
SIMULATION_SOURCES = {"webbpsf": {"kind": [webbpsf.WEBBPSF_KIND]}, "vega": {"kind": [vega.VEGA_KIND]}}

#: The group of everything a simulation of the chosen instruments reads: Mirage's files, the grism
#: folders, the CRDS references of the chosen modes, WebbPSF's data and the Vega spectrum.
SIMULATION = "simulation"


def retry_policy(config: Mapping) -> RetryPolicy:
    """How patiently a job fetches (the settings retries, connect_timeout, ...)."""
    return RetryPolicy(
        retries=config["retries"],
        connect_timeout=config["connect_timeout"],
        read_timeout=config["read_timeout"],
        min_speed=config["min_speed"],
        stall_window=config["stall_window"],
        max_retry_after=config["max_retry_after"],
    )


def own_folder(setting: str, folder: str | Path, mirage_data: Path, default: str) -> Path:
    """The folder a setting names for a source of its own (blank: ``default`` in MIRAGE_DATA); refused
    (:class:`UsageError`) when it is MIRAGE_DATA or holds it, whose files are other rows'."""
    path = Path(folder or Path(mirage_data) / default).expanduser().absolute()
    if Path(mirage_data).absolute().is_relative_to(path):
        raise UsageError(
            f"setting {setting!r}: {path} holds MIRAGE_DATA ({mirage_data}); name a folder of its own, "
            f"or leave it blank for {Path(mirage_data) / default}"
        )
    return path


class Catalog:
    """The rows of every source and the target groups over them, for checked settings ``config``.

    Raises :class:`UsageError` (or :class:`OSError` for an unreadable table)
    before any download when a table, group or setting is wrong.
    """

    def __init__(self, config: Mapping, workflow_dir: Path, mirage_data: Path):
        self.config = config
        self.workflow_dir = Path(workflow_dir)
        self.mirage_data = mirage_data
        # Sources, primary first: a file comes from the first that has it.
        self.base_urls = as_base_urls(config["base_url"] or layout.default_base_url())
        schemas = Path(workflow_dir) / "config" / "schemas"
        self.row_schema = yaml.safe_load((schemas / "reference_files.schema.yaml").read_text())
        self.table_path = str(config["reference_table"] or Path(workflow_dir) / "config" / "reference_files.csv")
        self.table = mirage.load_table(self.table_path, schema=self.row_schema)
        self.grism_table = grism.load_grism_table(
            config["grism_table"] or Path(workflow_dir) / "config" / "grism_files.csv",
            schema=yaml.safe_load((schemas / "grism_files.schema.yaml").read_text()),
        )
        grism_rows = grism.grism_rows(
            self.grism_table,
            {name: config[f"{name}_grism_version"] for name in grism.GRISM_INSTRUMENTS},
            as_base_url(config["grism_base_url"] or layout.default_grism_base_url()),
            mirage_data,
        )
        mirage_rows = mirage.as_rows(self.table, mirage_data, self.base_urls)
        # The package that reads WebbPSF's data, found where this build runs: it picks the data and its minimum.
        self.webbpsf_reader = webbpsf.installed_reader()
        simulation_rows = rows.combine(
            webbpsf.as_rows(
                as_url(config["webbpsf_url"] or webbpsf.default_url(self.webbpsf_reader)),
                own_folder("webbpsf_path", config["webbpsf_path"], mirage_data, webbpsf.DEFAULT_FOLDER),
            ),
            vega.as_rows(
                as_url(config["vega_url"] or vega.default_url()),
                own_folder("astropy_cache", config["astropy_cache"], mirage_data, vega.DEFAULT_CACHE),
            ),
        )
        self.rows = rows.combine(mirage_rows, grism_rows, simulation_rows)
        options = {key: config[key] for key in (*mirage.SKIP_FLAGS, "single_dark")}
        self.groups = {
            "all": mirage.mirage_group(config["instrument"], config["dark_type"]),
            **mirage.standard_groups(),
            **config["groups"],
        }
        allowed = mirage.vocabulary(self.row_schema)
        self.selections = {
            name: mirage_rows.loc[mirage.select(self.table, group, options, f"group {name!r}", allowed).index]
            for name, group in self.groups.items()
        }
        for name, group in grism.grism_groups().items():
            self.groups[name] = group
            self.selections[name] = mirage.select_group(grism_rows, group, f"group {name!r}")
        chosen = self.groups["all"]["instrument"]
        chosen_grism = grism_rows[grism_rows.instrument.isin(chosen)]
        self.groups[SIMULATION] = {"instrument": chosen}
        self.selections[SIMULATION] = rows.combine(self.selections["all"], chosen_grism, simulation_rows)
        for name, group in SIMULATION_SOURCES.items():
            self.groups[name] = group
            self.selections[name] = mirage.select_group(simulation_rows, group, f"group {name!r}")
        if config["grism"]:
            self.selections["all"] = rows.combine(self.selections["all"], chosen_grism)
        for name in SIMULATION_SOURCES:
            if config[name]:
                self.selections["all"] = rows.combine(self.selections["all"], self.selections[name])
        self.groups.update(CRDS_GROUPS)
        self.crds_path = crds_path_of(config["crds_path"])
        # Where the cache is filled from: as base_url, a variable can point elsewhere (a local stand-in).
        self.crds_source_url = os.environ.get(CRDS_URL_VARIABLE) or config["crds_server_url"]
        self.crds_plan: tuple[str, list[crds.Reference]] | None = None

    # --- CRDS: rows once a plan is known

    def crds_modes(self) -> list[dict[str, str]]:
        """The observing modes of crds_modes and crds_yaml_glob."""
        config = self.config
        pattern = config["crds_yaml_glob"]
        yaml_files = glob.glob(os.path.expanduser(pattern or ""))
        if pattern and not yaml_files:
            raise UsageError(f"crds_yaml_glob {pattern!r} matches no file")
        modes_file = config["crds_modes"] or ("" if pattern else str(self.workflow_dir / "config" / "crds_modes.csv"))
        return crds.gather_modes(modes_file, yaml_files)

    def _crds_choice(self) -> tuple:
        context = self.config["crds_context"]
        if not context:
            raise UsageError(
                f"the crds target (like {SIMULATION}) needs a pinned context: set crds_context (e.g. --config"
                " crds_context=jwst_1322.pmap; https://jwst-crds.stsci.edu lists them)"
            )
        return self.crds_path, context, self.crds_modes(), self.config["crds_types"]

    def plan_crds(self, dry_run: bool, policy: RetryPolicy | None = None) -> pd.DataFrame:
        """The CRDS references these settings need, as rows (added to :attr:`rows` and the crds groups).

        A plan made earlier is read back; else a dry run asks the server which
        references and how large (writing nothing), and a real run fills the
        cache's mappings and computes the choice locally (:func:`.crds.make_plan`).
        """
        if self.crds_plan is None:
            crds_path, context, modes, types = self._crds_choice()
            plan = crds.read_plan(crds.plan_path(crds_path, context, modes, types))
            if plan is None and dry_run:
                plan = crds.plan_from_server(self.crds_source_url, context, modes, types)
            elif plan is None:
                plan = crds.make_plan(crds_path, self.crds_source_url, context, modes, types, policy=policy)
            self._add_crds(plan)
        return self.selections["crds"]

    def saved_crds_plan(self) -> bool:
        """Add the CRDS rows of a plan made earlier for these settings, if there is one; asks no server."""
        if self.crds_plan is None and self.config["crds_context"]:
            try:
                plan = crds.read_plan(crds.plan_path(*self._crds_choice()))
            except UsageError:
                return False
            if plan is not None:
                self._add_crds(plan)
        return self.crds_plan is not None

    def _add_crds(self, plan: tuple[str, list[crds.Reference]]) -> None:
        self.crds_plan = plan
        crds_rows = crds.as_rows(self.crds_path, *plan)
        self.rows = rows.combine(self.rows, crds_rows)
        instruments = {"instrument": [name.lower() for name in crds.INSTRUMENTS]}  # one may have no reference
        for name, group in CRDS_GROUPS.items():
            self.selections[name] = mirage.select_group(crds_rows, group, f"group {name!r}", instruments)
        chosen = crds_rows[crds_rows.instrument.isin(self.groups[SIMULATION]["instrument"])]
        self.selections[SIMULATION] = rows.combine(self.selections[SIMULATION], chosen)

    # --- What else a simulation reads

    def needs_crds(self, name: str) -> bool:
        """Whether target group ``name`` holds CRDS references (known once a plan is made)."""
        return name in CRDS_GROUPS or name == SIMULATION

    def check_tools(self, missing: pd.DataFrame) -> None:
        """Refuse (:class:`UsageError`) to start when a row still to fetch needs a package that is not
        installed here: the Vega spectrum, astropy's."""
        if (missing.source == "vega").any():
            vega.require_astropy()

    def clear_outdated(self, selection: pd.DataFrame, dry_run: bool) -> list[str]:
        """Remove the record of WebbPSF's data among ``selection`` when the installed webbpsf needs newer
        data, so that it is fetched again (a dry run only says so); returns what was done, a line each."""
        lines = []
        for row in selection[selection.source == "webbpsf"].itertuples():
            if why := webbpsf.outdated(row, self.webbpsf_reader):
                if not dry_run:
                    layout.record_path(row.root, row.file_id).unlink(missing_ok=True)
                lines.append(f"{why}: {'would be' if dry_run else 'to be'} fetched again")
        return lines

    def simulation_environment(self) -> dict[str, str]:
        """The variables that point a simulation at WebbPSF's data and the Vega spectrum's cache,
        for those of them that are in place (recorded)."""

        def folder(file_id: str) -> Path | None:
            row = self.rows.loc[file_id]
            return Path(row.root) / row.lane if read_record(Path(row.root), file_id) else None

        reader = self.webbpsf_reader
        return simulation_environment(
            folder(webbpsf.WEBBPSF_FILE_ID),
            stpsf=reader is not None and reader.package == "stpsf",
            astropy_cache=folder(vega.VEGA_FILE_ID),
        )

    # --- What the reports and jobs are given

    def report_rows(self) -> pd.DataFrame:
        """Every row a report covers: the table's, the grism folders', and a saved CRDS plan's."""
        self.saved_crds_plan()
        return self.rows

    def report_selections(self) -> dict[str, list[str]]:
        """The file ids of each group a report covers (the crds groups once a plan was made)."""
        self.saved_crds_plan()
        return {name: list(selection.file_id) for name, selection in self.selections.items()}
