"""Synthetic grism repositories served as GitHub serves them, for the tests and demo.

Each repository becomes ``<owner>/<repo>/archive/<commit>.tar.gz`` under the
mirror's root: a gzipped tar whose members sit under ``<repo>-<commit>/`` with a
pax global header naming the commit, as ``git archive`` writes it. Its
version folders hold made-up ``.conf`` text and FITS files; the table returned
pins each file's git blob SHA-1 (and size, left blank for some files, as the
real table does), the way :func:`.mirror.build_mirror` pins the reference table.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pandas as pd

from mirage_reffiles.testing.mirror import synthetic_bytes

#: The repositories of the synthetic mirror: instrument -> (repository, its version folders).
#: V10 is the newest (after V9 and V3b, whatever the alphabet says).
REPOSITORIES = {
    "nircam": ("test-owner/GRISM_NIRCAM", ("V1", "V3", "V3b", "V9", "V10")),
    "niriss": ("test-owner/GRISM_NIRISS", ("V1", "V2")),
}

#: For each instrument, each version folder's files (path inside it -> bytes).
Contents = dict[str, dict[str, dict[str, bytes]]]


def blob_sha1(data: bytes) -> str:
    """The git blob SHA-1 of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _version_files(instrument: str, version: str, number: int) -> dict[str, bytes]:
    """A version folder: configuration files and FITS files, a few of each, differing by version."""
    seed = f"{instrument}/{version}"
    files = {
        f"{instrument.upper()}_F{150 + 50 * n}W_mod{'AB'[n % 2]}.conf": f"# {seed} config {n}\nBEAMA -10 100\n".encode()
        for n in range(2 + number % 2)
    }
    files |= {f"{instrument.upper()}.F{150 + 50 * n}W.sensitivity.fits": synthetic_bytes(f"{seed}/{n}", 3000 + 7 * n)
              for n in range(3)}  # fmt: skip
    files[f"{version}_only.fits"] = synthetic_bytes(f"{seed}/only", 2880)
    return files


def commit_of(repository: str) -> str:
    """The (made-up) commit each synthetic repository is pinned at."""
    return hashlib.sha1(repository.encode()).hexdigest()


def archive_path(repository: str) -> str:
    """Where GitHub serves ``repository``'s archive at its pinned commit, relative to https://github.com/."""
    return f"{repository}/archive/{commit_of(repository)}.tar.gz"


def write_archive(root: Path, repository: str, folders: dict[str, dict[str, bytes | tarfile.TarInfo]]) -> Path:
    """Write ``repository``'s archive under ``root`` holding ``folders`` (version -> files, or special members
    given as TarInfo) and a README."""
    top = f"{repository.split('/')[1]}-{commit_of(repository)}"
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": commit_of(repository)}
    ) as tar:
        members = {"README.md": b"Grism configuration files\n"}
        members |= {f"{version}/{name}": data for version, files in folders.items() for name, data in files.items()}
        for folder in ["", *folders]:
            info = tarfile.TarInfo(f"{top}/{folder}".rstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o775
            tar.addfile(info)
        for name, data in members.items():
            if isinstance(data, tarfile.TarInfo):  # a special member (a hostile archive's link)
                tar.addfile(data.replace(name=f"{top}/{name}"))
                continue
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o664
            tar.addfile(info, io.BytesIO(data))
    target = root / archive_path(repository)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())
    return target


def build_grism_mirror(root: Path) -> tuple[pd.DataFrame, Contents]:
    """Write every synthetic repository's archive under ``root``.

    Returns the grism table pinned to them (as ``config/grism_files.csv``
    is to GitHub's) and, per instrument, each version folder's files with
    their bytes. Every third file's size is left blank, as in the real table.
    """
    contents: Contents = {}
    rows = []
    for instrument, (repository, version_names) in REPOSITORIES.items():
        folders = {version: _version_files(instrument, version, n) for n, version in enumerate(version_names)}
        write_archive(root, repository, folders)
        contents[instrument] = folders
        for version, files in folders.items():
            for n, (name, data) in enumerate(files.items()):
                size = "" if n % 3 == 2 else str(len(data))
                rows.append([instrument, repository, commit_of(repository), f"{version}/{name}", size, blob_sha1(data)])
    columns = ["instrument", "repository", "commit", "path", "size_bytes", "git_blob_sha1"]
    return pd.DataFrame(rows, columns=columns), contents


def tamper(root: Path, instrument: str, contents: Contents, version: str) -> str:
    """Serve ``instrument``'s archive with one file of ``version`` changed (one byte); returns that file's name."""
    repository = REPOSITORIES[instrument][0]
    folders = {name: dict(files) for name, files in contents[instrument].items()}
    name = sorted(folders[version])[0]
    data = bytearray(folders[version][name])
    data[-1] ^= 0x01
    folders[version][name] = bytes(data)
    write_archive(root, repository, folders)
    return name
