"""What else a simulation reads, made up for the tests and served from a folder:
WebbPSF's data tarball and the Vega spectrum.

The tarball is laid out as STScI's is: one top folder (``webbpsf-data/``, or
``stpsf-data/``) holding ``version.txt`` and instrument folders of FITS
files. The spectrum is a real FITS table with synphot's columns (WAVELENGTH
in Angstrom, FLUX in FLAM), so that synphot reads it as it reads Vega's.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from mirage_reffiles.testing.mirror import synthetic_bytes

#: Where the synthetic server keeps each file, as its URL path.
WEBBPSF_PATH = "shared/static/webbpsf-data-LATEST.gz"
STPSF_PATH = "shared/static/stpsf-data-LATEST.gz"
VEGA_PATH = "cdbs/calspec/alpha_lyr_stis_010.fits"


def webbpsf_files(version: str, size: int = 40_000) -> dict[str, bytes]:
    """The files of a made-up data folder of ``version``, by path inside it."""
    files = {"version.txt": f"{version}\n".encode()}
    for instrument in ("NIRCam", "NIRISS", "FGS"):
        files[f"{instrument}/filters/F200W_throughput.fits"] = synthetic_bytes(f"{instrument}/{version}/f", size)
        opd = synthetic_bytes(f"{instrument}/{version}/opd", size // 2)
        files[f"{instrument}/OPD/OPD_RevW_ote_for_{instrument}_predicted.fits.gz"] = gzip.compress(opd, mtime=0)
    files["filters.tsv"] = b"instrument\tfilter\nNIRCam\tF200W\n"
    return files


def write_webbpsf_tarball(path: Path, version: str = "1.5.0", top: str = "webbpsf-data", size: int = 40_000) -> dict:
    """Write a data tarball of ``version`` whose members sit under ``top/``; returns its files (see
    :func:`webbpsf_files`)."""
    files = webbpsf_files(version, size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for folder in [top, *sorted({str(Path(top, name).parent) for name in files} - {top})]:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return files


def vega_bytes(points: int = 200) -> bytes:
    """A made-up Vega spectrum as synphot reads one: flux 1e-9 FLAM at every wavelength, 900 to 30000 Angstrom."""
    import numpy as np
    from astropy.io import fits

    columns = [
        fits.Column(name="WAVELENGTH", format="D", unit="ANGSTROM", array=np.linspace(900.0, 30000.0, points)),
        fits.Column(name="FLUX", format="D", unit="FLAM", array=np.full(points, 1e-9)),
    ]
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)]).writeto(buffer)
    return buffer.getvalue()


def build_simulation_mirror(root: Path, version: str = "1.5.0", stpsf_version: str = "2.1.0") -> dict:
    """Serveable files under ``root``: WebbPSF's and stpsf's data tarballs and the Vega spectrum.

    Returns ``{"webbpsf": files, "stpsf": files, "vega": bytes}``.
    """
    (root / VEGA_PATH).parent.mkdir(parents=True, exist_ok=True)
    vega = vega_bytes()
    (root / VEGA_PATH).write_bytes(vega)
    return {
        "webbpsf": write_webbpsf_tarball(root / WEBBPSF_PATH, version),
        "stpsf": write_webbpsf_tarball(root / STPSF_PATH, stpsf_version, top="stpsf-data"),
        "vega": vega,
    }
