"""Where things live under MIRAGE_DATA.

Mirage reads the unpacked reference files from fixed places; this build keeps
its own bookkeeping in one hidden folder beside them, so the tree stays what
Mirage expects and the state of every download travels with it.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path, PurePosixPath


def _workflow_dir() -> Path:
    """The workflow's folder (Snakefile, rules/, config/, profiles/).

    Installed from a wheel it is the package data ``mirage_reffiles/workflow``;
    in a checkout (or an editable install) it is the top of the repository,
    which pyproject.toml installs as that package data: one copy of each file.
    """
    installed = Path(str(resources.files("mirage_reffiles") / "workflow"))
    if (installed / "Snakefile").is_file():
        return installed
    return Path(__file__).resolve().parents[3]


#: Where the Snakefile, rules/, config/ and profiles/ are.
WORKFLOW_DIR = _workflow_dir()


def add_table_options(parser) -> None:
    """``--table`` and ``--output`` for a command that updates the table (an ``argparse`` parser)."""
    parser.add_argument("--table", type=Path, default=SHIPPED_TABLE, help="table to update (default: the shipped one)")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the result (default: the table itself; for the table inside an installed "
        "package, reference_files.csv here: use it with --config reference_table=...)",
    )


def table_output(table: Path, output: Path | None) -> Path:
    """Where a command that updates ``table`` writes it: ``output`` if given, else the table
    itself, except the one inside an installed package (a copy in the working directory)."""
    if output is not None:
        return output
    if Path(table).resolve() == SHIPPED_TABLE.resolve() and WORKFLOW_DIR.parent == Path(__file__).resolve().parents[1]:
        return Path("reference_files.csv")
    return Path(table)


#: The table of reference files that ships with the workflow.
SHIPPED_TABLE = WORKFLOW_DIR / "config" / "reference_files.csv"

#: STScI's server, the default base_url.
STSCI_BASE_URL = "https://data.science.stsci.edu/redirect/JWST/jwst-simulations/mirage_reference_files/"

#: The environment variable a site sets to use its own copy of the server instead.
BASE_URL_VARIABLE = "MIRAGE_REFFILES_BASE_URL"


def default_base_url() -> str:
    """Where files come from when base_url is blank: $MIRAGE_REFFILES_BASE_URL if set, else STScI's server."""
    return os.environ.get(BASE_URL_VARIABLE) or STSCI_BASE_URL


#: Bookkeeping folder under MIRAGE_DATA (records, partial downloads, logs).
STATE_DIR = ".reffiles"

#: Where ``keep_archives`` puts the downloaded ``.gz`` / ``.tar.gz`` files,
#: mirroring the server's layout so the folder can serve as a local mirror.
ARCHIVE_DIR = "archives"

#: The file Mirage users source to point Mirage (and CRDS) at the tree.
ENV_FILE = "mirage_env.sh"

#: Leading path component of the members inside Mirage's tarballs.
TARBALL_ROOT = "mirage_data"

#: Each kind of tarball's lane: the folder under MIRAGE_DATA it unpacks into
#: and the only place it may create files (a kind nested in another's lane,
#: like psf_wings, is off limits to the outer one).
TARBALL_FOLDERS = {
    "cosmic_ray_library": "{instrument}/cosmic_ray_library",
    "psf_library": "{instrument}/gridded_psf_library",
    "psf_wings": "{instrument}/gridded_psf_library/psf_wings",
    "ghost_stamps": "{instrument}/ghosts",
    "soss_psfs": "{instrument}/soss_psfs",
    "distortion": "{instrument}/reference_files/distortion",
}

#: GitHub, which serves the grism repositories' archives: the default grism_base_url.
GITHUB_BASE_URL = "https://github.com/"

#: The environment variable a site sets to serve the grism archives itself.
GRISM_BASE_URL_VARIABLE = "MIRAGE_REFFILES_GRISM_BASE_URL"


def default_grism_base_url() -> str:
    """Where grism archives come from when grism_base_url is blank: $MIRAGE_REFFILES_GRISM_BASE_URL if set,
    else GitHub."""
    return os.environ.get(GRISM_BASE_URL_VARIABLE) or GITHUB_BASE_URL


#: Where Mirage reads an instrument's grism data: the files of one version
#: folder of its GitHub repository (see :mod:`mirage_reffiles.sources.grism`).
GRISM_FOLDER = "{instrument}/GRISM_{INSTRUMENT}/current"


def grism_folder(instrument: str) -> str:
    """The folder under MIRAGE_DATA that holds ``instrument``'s grism files.

    >>> grism_folder("nircam")
    'nircam/GRISM_NIRCAM/current'
    """
    return GRISM_FOLDER.format(instrument=instrument, INSTRUMENT=instrument.upper())


def split_folder(folder: str | Path) -> tuple[Path, str]:
    """A folder a source fills (WebbPSF's data, an astropy cache) as its tree, the folder above it,
    and its name there, its lane.

    >>> split_folder("/data/mirage_data/webbpsf-data")
    (PosixPath('/data/mirage_data'), 'webbpsf-data')
    """
    path = Path(folder).expanduser().absolute()
    return path.parent, path.name


def record_path(mirage_data: str | Path, file_id: str) -> Path:
    """The JSON record of a fetched file; for a tarball, its completion record."""
    return Path(mirage_data) / STATE_DIR / "records" / f"{file_id}.json"


def downloads_dir(mirage_data: str | Path) -> Path:
    """Where unfinished downloads are kept (see :func:`partial_download_path`)."""
    return Path(mirage_data) / STATE_DIR / "downloads"


def partial_download_path(mirage_data: str | Path, file_id: str, archive: str) -> Path:
    """The compressed bytes received so far, kept so a later run can resume."""
    return downloads_dir(mirage_data) / f"{file_id}{'.' + archive if archive else ''}.part"


def staging_dir(mirage_data: str | Path, file_id: str) -> Path:
    """Where a tarball is unpacked before its members are moved into place."""
    return Path(mirage_data) / STATE_DIR / "incoming" / file_id


def lock_path(mirage_data: str | Path, file_id: str) -> Path:
    return Path(mirage_data) / STATE_DIR / "locks" / f"{file_id}.lock"


def kept_archive_path(mirage_data: str | Path, server_path: str) -> Path:
    return Path(mirage_data) / ARCHIVE_DIR / server_path


def temporary_path(final: Path) -> Path:
    """A sibling of ``final`` that is renamed onto it once complete."""
    return final.with_name(final.name + ".part")


def tarball_member_destination(name: str) -> str | None:
    """Path under MIRAGE_DATA for a tarball member name.

    Mirage's tarballs hold ``mirage_data/<instrument>/...``; that leading
    component is dropped so members land directly under MIRAGE_DATA.
    Returns None for the ``mirage_data`` folder entry itself.

    >>> tarball_member_destination("mirage_data/fgs/cosmic_ray_library/a.fits")
    'fgs/cosmic_ray_library/a.fits'
    >>> tarball_member_destination("niriss/ghosts/stamp.fits")
    'niriss/ghosts/stamp.fits'
    """
    parts = PurePosixPath(name).parts
    if parts and parts[0] == TARBALL_ROOT:
        parts = parts[1:]
    if not parts:
        return None
    return str(PurePosixPath(*parts))


def is_recorded_target(row) -> bool:
    """Whether a row's target is its record: a tarball's, or a file whose name its tool chooses (astropy's cache)."""
    return row.archive == "tar.gz" or not row.destination


def target_path(row) -> Path:
    """The file whose presence means a row (of any source: see :mod:`.sources.rows`) is done: its
    file, or its record when that is its target (written once every file is in place)."""
    if is_recorded_target(row):
        return record_path(row.root, row.file_id)
    return Path(row.root) / row.destination
