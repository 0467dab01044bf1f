"""The environment lines Mirage needs, and the file users source to get them."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from mirage_reffiles.tree.disk import write_atomically
from mirage_reffiles.tree.door import Lane, writable
from mirage_reffiles.tree.layout import ENV_FILE

#: A CRDS server URL with the word "serverless": crds attempts no network at all.
SERVERLESS_URL = "https://jwst-serverless-mode.stsci.edu"

#: One comment line per variable, written above it in mirage_env.sh.
COMMENTS = {
    "MIRAGE_DATA": "Mirage's reference files.",
    "CRDS_PATH": "The CRDS cache: mappings, config and reference files.",
    "CRDS_SERVER_URL": "Where crds asks for best references and downloads what the cache lacks.",
    "CRDS_CONTEXT": "The pinned CRDS context the cache was filled for: crds resolves with it and no server.",
    "CRDS_READONLY_CACHE": "crds never writes to the cache (it may be shared and read-only).",
    "WEBBPSF_PATH": "WebbPSF's data (webbpsf 2, an alias of stpsf, copies it to STPSF_PATH).",
    "STPSF_PATH": "The same data for stpsf, webbpsf's successor.",
    "ASTROPY_CACHE_DIR": "astropy's download cache (astropy 8 and later), holding the Vega spectrum Mirage asks for.",
}
OFFLINE_COMMENTS = {
    "CRDS_SERVER_URL": "Serverless: crds makes no network attempt and resolves from the cache alone (offline nodes).",
}


def crds_path_of(crds_path: str) -> Path:
    """The CRDS cache a setting names: blank means ``$CRDS_PATH`` if set, else CRDS's own ``~/crds_cache``."""
    return Path(crds_path or os.environ.get("CRDS_PATH") or str(Path.home() / "crds_cache")).expanduser()


def mirage_environment(
    mirage_data: Path, crds_path: str, crds_server_url: str, crds_context: str | None = None
) -> dict[str, str]:
    """MIRAGE_DATA plus the CRDS variables Mirage asks its users to set.

    A blank ``crds_path`` means ``$CRDS_PATH`` if set, else CRDS's own
    default, ``~/crds_cache``. With ``crds_context`` (a cache this build
    filled for that context) the CRDS lines are those of an offline node: the
    pinned context, a serverless URL and a read-only cache.
    """
    environment = {
        "MIRAGE_DATA": str(mirage_data),
        "CRDS_PATH": str(crds_path_of(crds_path)),
        "CRDS_SERVER_URL": crds_server_url,
    }
    if crds_context:
        environment.update(CRDS_SERVER_URL=SERVERLESS_URL, CRDS_CONTEXT=crds_context, CRDS_READONLY_CACHE="1")
    return environment


def simulation_environment(
    webbpsf_path: Path | None = None, stpsf: bool = False, astropy_cache: Path | None = None
) -> dict[str, str]:
    """The variables with which a simulation reads WebbPSF's data and the Vega spectrum from this
    build's folders (each only when given): ``WEBBPSF_PATH``, and ``STPSF_PATH`` too when the data is
    stpsf's; ``ASTROPY_CACHE_DIR``."""
    environment = {}
    if webbpsf_path is not None:
        environment["WEBBPSF_PATH"] = str(webbpsf_path)
        if stpsf:
            environment["STPSF_PATH"] = str(webbpsf_path)
    if astropy_cache is not None:
        environment["ASTROPY_CACHE_DIR"] = str(astropy_cache)
    return environment


def export_lines(environment: dict[str, str]) -> str:
    """``export NAME=value`` lines for a POSIX shell."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment.items())


def write_env_file(mirage_data: Path, environment: dict[str, str]) -> Path:
    """Write the export lines, each below a comment, to ``MIRAGE_DATA/mirage_env.sh``; return its path.

    A file that already says the same is left alone, so a build over a
    complete tree (perhaps mounted read-only) writes nothing.
    """
    path = writable(mirage_data, ENV_FILE, Lane(own=()))
    offline = environment.get("CRDS_SERVER_URL") == SERVERLESS_URL
    lines = ["# Source this file to point Mirage at these reference files.\n"]
    if offline:
        lines.append(
            "# For nodes without internet. Online, use: export CRDS_SERVER_URL=https://jwst-crds.stsci.edu"
            " and unset CRDS_CONTEXT CRDS_READONLY_CACHE (crds then fetches what the cache lacks).\n"
        )
    for name, value in environment.items():
        comment = (OFFLINE_COMMENTS if offline else {}).get(name) or COMMENTS.get(name)
        lines.append(f"# {comment}\n{export_lines({name: value})}")
    text = "".join(lines)
    if not (path.is_file() and path.read_text() == text):
        write_atomically(path, text)
    return path
