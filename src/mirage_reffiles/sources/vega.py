"""The Vega spectrum, in astropy's download cache under the URL Mirage asks for.

Mirage normalises spectra with synphot's ``SourceSpectrum.from_vega()``
under ``syn_conf.set_temp("vega_file", MIRAGE_VEGA_URL)``; synphot reads that
URL through astropy's download cache, so a node without internet needs the
file in the cache of the user who simulates. astropy (8 and later) reads its
cache from ``$ASTROPY_CACHE_DIR`` when that names a folder, else
``$XDG_CACHE_HOME/astropy``, else ``~/.cache/astropy`` (``~/.astropy/cache``
when only that one exists). It reads a read-only cache without complaint.

Here the cache is a folder of its own, which ``mirage_env.sh`` names as
``ASTROPY_CACHE_DIR``: filled once, read by everyone who sources it. The
file is downloaded resumably into the bookkeeping of its root, checked as a
FITS spectrum, then put into the cache with astropy's public
``import_file_to_cache``, in a separate process whose only setting is that
variable (what a simulation will see); that process also asks astropy for
the URL back, so the entry is proven where a simulation will look.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

import pandas as pd

from mirage_reffiles.errors import FetchError, UsageError, VerifyError
from mirage_reffiles.sources import rows
from mirage_reffiles.transfer.fetch import twice_on_bad_bytes
from mirage_reffiles.transfer.http import RetryPolicy, download
from mirage_reffiles.transfer.partial import remove_partial
from mirage_reffiles.transfer.progress import Progress
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.disk import exclusive, require_free_space
from mirage_reffiles.tree.door import Lane, writable
from mirage_reffiles.tree.records import Produced, Record, read_record, write_record
from mirage_reffiles.unpack.content import head_of, is_fits
from mirage_reffiles.unpack.gunzip import ArchiveSink
from mirage_reffiles.unpack.hashing import sha256_of

#: The spectrum Mirage normalises with (mirage/utils/constants.py: VEGA_SPECTRUM): the cache's key.
MIRAGE_VEGA_URL = "http://ssb.stsci.edu/cdbs/calspec/alpha_lyr_stis_010.fits"
#: The environment variable a site sets to serve the spectrum itself (when vega_url is blank).
URL_VARIABLE = "MIRAGE_REFFILES_VEGA_URL"

#: The row's id: names its record, log and partial download.
VEGA_FILE_ID = "vega"
#: The ``kind`` of its row.
VEGA_KIND = "vega"
#: The default cache folder, under MIRAGE_DATA.
DEFAULT_CACHE = "astropy-cache"
#: The variable astropy reads its cache folder from (astropy 8 and later).
CACHE_VARIABLE = "ASTROPY_CACHE_DIR"
#: The oldest astropy that reads CACHE_VARIABLE.
ASTROPY_MIN = (8, 0)


def default_url() -> str:
    """Where the spectrum comes from when ``vega_url`` is blank: ``$MIRAGE_REFFILES_VEGA_URL`` if set
    (a site's copy), else Mirage's URL."""
    return os.environ.get(URL_VARIABLE) or MIRAGE_VEGA_URL


def require_astropy() -> None:
    """Refuse (:class:`UsageError`) unless an astropy that reads ``$ASTROPY_CACHE_DIR`` is installed."""
    if importlib.util.find_spec("astropy") is None:
        raise UsageError(
            "the vega target puts the spectrum into astropy's download cache, and astropy is not installed "
            "here; install it where the build runs (pip install 'mirage-reffiles[simulation]')"
        )
    version = importlib.metadata.version("astropy")
    if tuple(int(re.match(r"\d*", part).group() or 0) for part in version.split(".")[:2]) < ASTROPY_MIN:
        raise UsageError(
            f"astropy {version} reads its cache only from ~/.astropy/cache or $XDG_CACHE_HOME/astropy, "
            f"not from ${CACHE_VARIABLE}; install astropy 8 or later (pip install 'astropy>=8')"
        )


#: Estimated size of the spectrum.
ESTIMATED_BYTES = 300_000


def as_rows(url: str, cache: str | Path) -> pd.DataFrame:
    """The spectrum as one row of the one shape (see :mod:`.rows`): a file from ``url`` kept in the
    astropy cache folder ``cache`` (its lane), where astropy chooses its name: its target is its record."""
    root, folder = layout.split_folder(cache)
    return rows.frame(
        [
            {
                "file_id": VEGA_FILE_ID,
                "source": "vega",
                "root": str(root),
                "urls": url,
                "lane": folder,
                "kind": VEGA_KIND,
                "size_bytes": str(ESTIMATED_BYTES),
                "size_exact": "false",
                "unpacked_bytes": str(ESTIMATED_BYTES),
                "unpacked_exact": "false",
            }
        ]
    )


def request(row, policy: RetryPolicy | None = None) -> VegaRequest:
    """The request that fetches ``row`` (of :func:`as_rows`)."""
    return VegaRequest(rows.urls(row)[0], Path(row.root), row.lane, file_id=row.file_id, policy=policy or RetryPolicy())


@dataclass
class VegaRequest:
    """The Vega spectrum to fetch, as a build job asks for it: what :func:`fetch_vega` does."""

    url: str  # where the bytes come from
    mirage_data: Path  # the tree (the row's root) that holds the cache folder; its bookkeeping is in .reffiles/
    folder: str  # the cache folder under root: what ASTROPY_CACHE_DIR names
    key: str = MIRAGE_VEGA_URL  # the URL the cache files it under
    file_id: str = VEGA_FILE_ID
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    archive: str = ""  # names the partial download (a file kept as it is)


def check_spectrum(path: Path, url: str) -> None:
    """Refuse (:class:`VerifyError`) a file that is not a FITS table with WAVELENGTH and FLUX columns
    (what synphot reads from a spectrum's first extension)."""
    if not is_fits(head := head_of(path)):
        raise VerifyError(f"{url}: not a FITS file (it begins {head[:16]!r}); the bytes were discarded")
    from astropy.io import fits

    try:
        with fits.open(path) as hdus:
            columns = {name.upper() for name in hdus[1].columns.names} if len(hdus) > 1 else set()
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise VerifyError(f"{url}: not a readable FITS file ({error}); the bytes were discarded") from None
    if not {"WAVELENGTH", "FLUX"} <= columns:
        raise VerifyError(
            f"{url}: its first extension has no WAVELENGTH and FLUX columns, not a spectrum; the bytes were discarded"
        )


def _into_cache(cache: Path, key: str, path: Path) -> str:
    """Put ``path`` into the astropy cache ``cache`` under ``key``, in a separate process that finds its
    cache as a simulation will, by ``ASTROPY_CACHE_DIR``; returns where astropy then finds the entry."""
    environment = {**os.environ, CACHE_VARIABLE: str(cache)}
    environment.pop("XDG_CACHE_HOME", None)
    try:
        result = subprocess.run([sys.executable, "-c", _IMPORT, key, str(path)], env=environment,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise FetchError(f"astropy did not put {key} into its cache {cache} within 300 s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise FetchError(f"astropy could not put {key} into its cache {cache}: {last}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if not Path(found).is_relative_to(cache):
        raise FetchError(f"astropy put {key} into {found}, outside {cache}: is ${CACHE_VARIABLE} ignored?")
    return found


# Run by _into_cache: the public API only, and the same lookup synphot makes (no network: it is cached).
_IMPORT = """
import json, sys
from astropy.utils.data import conf, download_file, import_file_to_cache
import_file_to_cache(sys.argv[1], sys.argv[2], remove_original=False)
with conf.set_temp("allow_internet", False):  # a miss fails at once
    print(json.dumps(download_file(sys.argv[1], cache=True)))
"""


def fetch_vega(request: VegaRequest, log: TextIO | None = None) -> Path:
    """Put the Vega spectrum into the cache ``root/folder`` under ``request.key``; returns its record's path.

    Downloaded resumably, checked as a FITS spectrum before it enters the
    cache (a bad one is discarded and fetched once more from the start),
    and recorded last with the cache's files for the entry.
    """
    root = Path(request.mirage_data).absolute()
    cache = root / request.folder
    partial = layout.partial_download_path(root, request.file_id, request.archive)

    def once() -> Path:
        with exclusive(layout.lock_path(root, request.file_id), request.file_id, log):
            record = read_record(root, request.file_id)
            if record is not None and all((root / item.path).is_file() for item in record.files):
                return layout.record_path(root, request.file_id)

            def reserve(rest: int) -> None:  # room for the download and its copy in the cache
                require_free_space(partial, 2 * rest, request.file_id)

            size, sha256 = download(request.url, partial, ArchiveSink(partial), policy=request.policy, log=log,
                                    reserve=reserve, progress=Progress(request.file_id, stream=log))  # fmt: skip
            try:
                check_spectrum(partial, request.url)
            except VerifyError:
                remove_partial(partial)
                raise
            # Through the door: no link on the way to the cache folder, which is this row's lane.
            writable(root, request.folder, Lane(PurePosixPath(request.folder), VEGA_KIND), is_dir=True)
            cache.mkdir(parents=True, exist_ok=True)
            entry = Path(_into_cache(cache, request.key, partial)).parent
            files = [Produced(path.relative_to(root).as_posix(), path.stat().st_size, sha256_of(path))
                     for path in sorted(entry.iterdir()) if path.is_file()]  # fmt: skip
            record = write_record(root, Record(request.file_id, request.url, size, sha256, files))
            remove_partial(partial)
            return record

    record = twice_on_bad_bytes(once, request.file_id, log)
    print(f"{request.file_id}: {request.key} is in the astropy cache {cache}", file=log or sys.stderr, flush=True)
    return record
