"""The environment lines Mirage needs, and the file users source to get them."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from mirage_reffiles.disk import write_atomically
from mirage_reffiles.layout import ENV_FILE


def mirage_environment(mirage_data: Path, crds_path: str, crds_server_url: str) -> dict[str, str]:
    """MIRAGE_DATA plus the two CRDS variables Mirage asks its users to set.

    A blank ``crds_path`` means ``$CRDS_PATH`` if set, else CRDS's own
    default, ``~/crds_cache``.
    """
    crds = crds_path or os.environ.get("CRDS_PATH") or str(Path.home() / "crds_cache")
    return {
        "MIRAGE_DATA": str(mirage_data),
        "CRDS_PATH": str(Path(crds).expanduser()),
        "CRDS_SERVER_URL": crds_server_url,
    }


def export_lines(environment: dict[str, str]) -> str:
    """``export NAME=value`` lines for a POSIX shell."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in environment.items())


def write_env_file(mirage_data: Path, environment: dict[str, str]) -> Path:
    """Write the export lines to ``MIRAGE_DATA/mirage_env.sh``; return its path.

    A file that already says the same is left alone, so a build over a
    complete tree (perhaps mounted read-only) writes nothing.
    """
    path = mirage_data / ENV_FILE
    text = "# Source this file to point Mirage at these reference files.\n" + export_lines(environment)
    if not (path.is_file() and path.read_text() == text):
        write_atomically(path, text)
    return path
