"""What a build will fetch and whether it fits, before it starts.

Only what is missing counts: a file whose target is on disk costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mirage_reffiles.errors import SpaceError, UsageError
from mirage_reffiles.transfer.partial import kept_bytes
from mirage_reffiles.tree.disk import existing_ancestor, free_space
from mirage_reffiles.tree.layout import downloads_dir, partial_download_path, target_path

#: Downloads that may run at once; each holds its partial file until done.
PARALLEL_DOWNLOADS = 8


def _gb(n: float) -> str:
    """Bytes in the unit that reads best."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def _size(value: str, exact: str) -> str:
    if not value:
        return "unknown"
    return _gb(int(value)) + ("" if exact == "true" else "*")


def _sum(column: pd.Series) -> int:
    return int(pd.to_numeric(column, errors="coerce").fillna(0).sum())


@dataclass
class Plan:
    """The cost of building a selection of the table into ``mirage_data``."""

    name: str
    mirage_data: Path
    missing: pd.DataFrame
    present: int
    keep_archives: bool
    free_bytes: int
    kept_bytes: int = 0  # of the missing files' downloads, kept by interrupted runs: not fetched again

    @property
    def size_bytes(self) -> int:
        """The missing files' whole downloads."""
        return _sum(self.missing.size_bytes)

    @property
    def download_bytes(self) -> int:
        """What is still to come over the wire."""
        return max(self.size_bytes - self.kept_bytes, 0)

    @property
    def unpacked_bytes(self) -> int:
        return _sum(self.missing.unpacked_bytes)

    @property
    def on_disk_bytes(self) -> int:
        """What the fetched files take once the build is done."""
        return self.unpacked_bytes + (self.download_bytes if self.keep_archives else 0)

    @property
    def estimated(self) -> bool:
        """True when any size counted is an estimate (or unknown)."""
        return bool(((self.missing.size_exact != "true") | (self.missing.unpacked_exact != "true")).any())

    @property
    def needed_bytes(self) -> int:
        """Peak disk use: every unpacked file, plus the downloads while they are on disk."""
        downloads = pd.to_numeric(self.missing.size_bytes, errors="coerce").fillna(0)
        in_flight = downloads.sum() if self.keep_archives else downloads.nlargest(PARALLEL_DOWNLOADS).sum()
        return self.unpacked_bytes + int(in_flight)

    @property
    def shortfall(self) -> int:
        return max(0, self.needed_bytes - self.free_bytes)

    def describe(self, per_file: bool = False) -> str:
        """A human summary; ``per_file`` lists each file to fetch with its sizes."""
        mark = " (estimate)" if self.estimated else ""
        lines = [f"{self.name}: building {self.mirage_data}"]
        if per_file and len(self.missing):
            width = max(map(len, self.missing.file_id))
            lines.append(f"  {'file to fetch':<{width}}  {'download':>12}  {'unpacked':>12}")
            for row in self.missing.itertuples():
                download = _size(row.size_bytes, row.size_exact)
                unpacked = _size(row.unpacked_bytes, row.unpacked_exact)
                lines.append(f"  {row.file_id:<{width}}  {download:>12}  {unpacked:>12}")
            note = "  (* estimated: from Mirage's size table, or a grism folder's known sizes)"
            lines.append(note if self.estimated else "")
        kinds = self.missing.kind.eq("dark")
        lines += [
            f"  to fetch: {len(self.missing)} files ({int(kinds.sum())} darks, {int((~kinds).sum())} archives); "
            f"already present: {self.present}",
            f"  to download: {_gb(self.download_bytes)}{mark} ({self.download_bytes:,} bytes)"
            + (f"; {_gb(self.kept_bytes)} more are kept from interrupted downloads" if self.kept_bytes else ""),
            f"  on disk after unpacking: {_gb(self.on_disk_bytes)}{mark} ({self.on_disk_bytes:,} bytes)",
            f"  free space: {_gb(self.free_bytes)}; needed at most: {_gb(self.needed_bytes)}{mark}",
        ]
        unknown = int((self.missing.size_bytes == "").sum())
        if unknown:
            lines.append(f"  {unknown} file(s) of unknown size are not counted")
        if self.shortfall:
            lines.append(
                f"  WARNING: this does not fit: {_gb(self.shortfall)} more free space is needed on the "
                f"filesystem of {self.mirage_data}"
            )
        return "\n".join(lines)

    def check_writable(self) -> None:
        """Raise :class:`UsageError` when files are to be fetched into a tree this user cannot write."""
        folder = existing_ancestor(self.mirage_data)
        if not os.access(folder, os.W_OK):
            raise UsageError(
                f"cannot write to {folder} (read-only, or not yours), so the {len(self.missing)} missing files "
                f"of {self.name} cannot be fetched there; choose a MIRAGE_DATA you can write, or check the tree "
                "without changing it: snakemake status"
            )

    def check_fits(self) -> None:
        """Raise :class:`SpaceError` when the build needs more than is free."""
        if self.shortfall:
            raise SpaceError(
                f"not starting {self.name}: it needs {_gb(self.needed_bytes)} ({self.needed_bytes:,} bytes"
                f"{', estimated' if self.estimated else ''}) but {self.mirage_data} has {_gb(self.free_bytes)} free, "
                f"{_gb(self.shortfall)} short. Free some "
                "space, choose a smaller target (single_dark=true, skip_darks=true), or set "
                "ignore_free_space=true to start anyway."
            )


def is_present(mirage_data: Path, rows: pd.DataFrame) -> pd.Series:
    """For each row, whether its target is on disk (then it is never fetched)."""
    return pd.Series(
        [target_path(mirage_data, row).exists() for row in rows.itertuples()], index=rows.index, dtype=bool
    )


def status(mirage_data: Path, table: pd.DataFrame, selections: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Files and bytes present and missing, for each target group and each instrument.

    Bytes present are the table's unpacked sizes; bytes missing, its download
    sizes; ``sizes_exact`` says whether all of them were measured.
    """
    present = is_present(Path(mirage_data), table)
    scopes = {("group", name): rows for name, rows in selections.items()}
    scopes |= {("instrument", name): table[table.instrument == name] for name in table.instrument.unique()}
    lines = []
    for (scope, name), rows in scopes.items():
        here = present.loc[rows.index]
        lines.append(
            {
                "scope": scope,
                "name": name,
                "files_present": int(here.sum()),
                "files_missing": int((~here).sum()),
                "bytes_present": _sum(rows.unpacked_bytes[here]),
                "bytes_missing": _sum(rows.size_bytes[~here]),
                "sizes_exact": bool((rows.size_exact == "true").all() and (rows.unpacked_exact == "true").all()),
            }
        )
    return pd.DataFrame(lines)


def make_plan(name: str, mirage_data: Path, rows: pd.DataFrame, keep_archives: bool = False) -> Plan:
    """The plan for building ``rows``: which are missing, and the space they need."""
    mirage_data = Path(mirage_data)
    present = is_present(mirage_data, rows)
    missing = rows[~present]
    kept = 0
    if downloads_dir(mirage_data).is_dir():
        kept = sum(kept_bytes(partial_download_path(mirage_data, r.file_id, r.archive)) for r in missing.itertuples())
    return Plan(name, mirage_data, missing, int(present.sum()), keep_archives, free_space(mirage_data), kept)
