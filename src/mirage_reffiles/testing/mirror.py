"""A synthetic copy of the reference-file server, for the demo, tests and benchmark.

Every row of the table becomes a real file at its real relative path: a gzip
of a made-up FITS file for a dark, a tar.gz whose members start with
``mirage_data/<instrument>/...`` for a library. The bytes are derived from
each row's ``file_id``, so two mirrors built from the same table are equal.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from pathlib import Path

import pandas as pd

from mirage_reffiles.tree.layout import TARBALL_FOLDERS, TARBALL_ROOT, tarball_member_destination
from mirage_reffiles.unpack.content import FITS_MAGIC

#: The first card of a FITS file (80 characters): the build checks that every dark and FITS member begins so.
FITS_CARD = (FITS_MAGIC + b" " * 20 + b"T").ljust(80)


def synthetic_bytes(seed: str, size: int) -> bytes:
    """``size`` bytes of a made-up FITS file: its first card, then bytes that
    compress about 2:1, the same for the same seed."""
    data = bytearray(size)
    data[0::2] = random.Random(seed).randbytes(len(data[0::2]))
    data[:80] = FITS_CARD[:size]
    return bytes(data)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        folders = sorted({str(Path(name).parent) for name in members})
        for folder in [TARBALL_ROOT, *folders]:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


#: For each file_id, the files it produces under MIRAGE_DATA, with their bytes.
Expected = dict[str, dict[str, bytes]]


def build_mirror(root: Path, table: pd.DataFrame, size: int = 16_384) -> tuple[pd.DataFrame, Expected]:
    """Write a mirror of ``table``'s rows under ``root``.

    ``size`` is the unpacked size of each dark (tarball members are smaller).
    Returns the table pinned to the mirror (exact sizes and SHA-256, as
    ``python -m mirage_reffiles.pin`` would make it) and, for each
    ``file_id``, the files it should produce under MIRAGE_DATA with their
    exact bytes.
    """
    pinned = table.copy()
    expected: Expected = {}
    for row in table.itertuples():
        if row.archive == "gz":
            data = synthetic_bytes(row.file_id, size)
            archive = _gzip(data)
            expected[row.file_id] = {row.destination: data}
        else:
            folder = TARBALL_FOLDERS[row.kind].format(instrument=row.instrument)
            members = {
                f"{TARBALL_ROOT}/{folder}/{row.file_id}_{n}.fits": synthetic_bytes(f"{row.file_id}/{n}", size // 4)
                for n in range(3)
            }
            archive = _tarball(members)
            expected[row.file_id] = {tarball_member_destination(name): data for name, data in members.items()}
        target = root / row.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive)
        unpacked = sum(map(len, expected[row.file_id].values()))
        pinned.loc[row.Index, ["size_bytes", "size_exact", "unpacked_bytes", "unpacked_exact", "sha256"]] = [
            str(len(archive)),
            "true",
            str(unpacked),
            "true",
            hashlib.sha256(archive).hexdigest(),
        ]
    return pinned, expected


def main(argv: list[str] | None = None) -> None:
    import argparse

    from mirage_reffiles.sources.mirage import load_table, mirage_group, select_group
    from mirage_reffiles.tree.layout import SHIPPED_TABLE

    parser = argparse.ArgumentParser(
        prog="python -m mirage_reffiles.mirror",
        description="Build a synthetic copy of the reference-file server in FOLDER: every row of the table as a "
        "small made-up file at its real path (a FITS header, then pseudo-random bytes), and FOLDER/"
        "pinned_table.csv, the table pinned to those files (exact sizes and SHA-256). Serve it with "
        "`python -m mirage_reffiles.server FOLDER` and point base_url and reference_table at them.",
    )
    parser.add_argument("folder", type=Path, help="where to build the mirror")
    parser.add_argument("--table", type=Path, default=SHIPPED_TABLE, help="table to mirror (default: the shipped one)")
    parser.add_argument("--instrument", default="all", help="only these instruments: 'all' or a comma-separated list")
    parser.add_argument("--size", type=int, default=16_384, help="unpacked bytes of each dark (default: %(default)s)")
    args = parser.parse_args(argv)
    table = load_table(args.table)
    rows = select_group(table, {"instrument": mirage_group(args.instrument, "both")["instrument"]})
    pinned, _ = build_mirror(args.folder, rows, size=args.size)
    pinned.to_csv(args.folder / "pinned_table.csv", index=False)
    print(f"{len(rows)} files in {args.folder}; their table: {args.folder / 'pinned_table.csv'}")


if __name__ == "__main__":
    main()
