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
    """The cost of building a selection of rows (of any source) into their trees.

    ``free_bytes`` is the free space of the filesystem that is shortest of
    room for what it must take (each tree counts on the filesystem it is on).
    """

    name: str
    roots: list[Path]
    missing: pd.DataFrame
    present: int
    keep_archives: bool
    free_bytes: int
    kept_bytes: int = 0  # of the missing files' downloads, kept by interrupted runs: not fetched again
    short_of: Path | None = None  # the tree whose filesystem lacks the most room, if any does
    shortfall: int = 0

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
        return needed_bytes(self.missing, self.keep_archives)

    @property
    def where(self) -> str:
        return ", ".join(map(str, self.roots))

    def describe(self, per_file: bool = False) -> str:
        """A human summary; ``per_file`` lists each file to fetch with its sizes."""
        mark = " (estimate)" if self.estimated else ""
        lines = [f"{self.name}: building {self.where}"]
        if per_file and len(self.missing):
            width = max(map(len, self.missing.file_id))
            lines.append(f"  {'file to fetch':<{width}}  {'download':>12}  {'unpacked':>12}")
            for row in self.missing.itertuples():
                download = _size(row.size_bytes, row.size_exact)
                unpacked = _size(row.unpacked_bytes, row.unpacked_exact)
                lines.append(f"  {row.file_id:<{width}}  {download:>12}  {unpacked:>12}")
            note = "  (* estimated: from Mirage's size table, or a grism folder's known sizes, until a server says)"
            lines.append(note if self.estimated else "")
        lines += [
            f"  to fetch: {len(self.missing)} files ({_kinds(self.missing)}); already present: {self.present}",
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
                f"filesystem of {self.short_of}"
            )
        return "\n".join(lines)

    def check_writable(self) -> None:
        """Raise :class:`UsageError` when files are to be fetched into a tree this user cannot write."""
        for root in sorted(set(self.missing.root)):
            folder = existing_ancestor(Path(root))
            if not os.access(folder, os.W_OK):
                count = int((self.missing.root == root).sum())
                raise UsageError(
                    f"cannot write to {folder} (read-only, or not yours), so the {count} missing files "
                    f"of {self.name} cannot be fetched there; choose a tree you can write (mirage_data, crds_path), "
                    "or check the tree without changing it: snakemake status"
                )

    def check_fits(self) -> None:
        """Raise :class:`SpaceError` when the build needs more than is free."""
        if self.shortfall:
            raise SpaceError(
                f"not starting {self.name}: it needs {_gb(self.needed_bytes)} ({self.needed_bytes:,} bytes"
                f"{', estimated' if self.estimated else ''}) but {self.short_of} has {_gb(self.free_bytes)} free, "
                f"{_gb(self.shortfall)} short. Free some "
                "space, choose a smaller target (single_dark=true, skip_darks=true), or set "
                "ignore_free_space=true to start anyway."
            )


def _kinds(rows: pd.DataFrame) -> str:
    """How many of each kind of row: darks, archives, files kept as they are.

    >>> _kinds(pd.DataFrame({"kind": ["dark", "psf_library"], "archive": ["gz", "tar.gz"]}))
    '1 darks, 1 archives'
    """
    darks = int(rows.kind.eq("dark").sum())
    archives = int(((rows.kind != "dark") & (rows.archive != "")).sum())
    files = int((rows.archive == "").sum())
    return f"{darks} darks, {archives} archives" + (f", {files} files" if files else "")


def needed_bytes(rows: pd.DataFrame, keep_archives: bool) -> int:
    """Peak disk use of fetching ``rows``: every unpacked file, plus the downloads while they are on disk."""
    downloads = pd.to_numeric(rows.size_bytes, errors="coerce").fillna(0)[rows.archive != ""]
    in_flight = downloads.sum() if keep_archives else downloads.nlargest(PARALLEL_DOWNLOADS).sum()
    return _sum(rows.unpacked_bytes) + int(in_flight)


def is_present(rows: pd.DataFrame) -> pd.Series:
    """For each row, whether its target is on disk (then it is never fetched)."""
    return pd.Series([target_path(row).exists() for row in rows.itertuples()], index=rows.index, dtype=bool)


def status(rows: pd.DataFrame, selections: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Files and bytes present and missing, for each target group, each source and each instrument.

    Bytes present are the rows' unpacked sizes; bytes missing, their download
    sizes; ``sizes_exact`` says whether all of them were measured.
    """
    present = is_present(rows)
    scopes = {("group", name): selection for name, selection in selections.items()}
    scopes |= {("source", name): rows[rows.source == name] for name in rows.source.unique()}
    scopes |= {("instrument", name): rows[rows.instrument == name] for name in rows.instrument.unique() if name}
    lines = []
    for (scope, name), chosen in scopes.items():
        here = present.loc[chosen.index]
        lines.append(
            {
                "scope": scope,
                "name": name,
                "files_present": int(here.sum()),
                "files_missing": int((~here).sum()),
                "bytes_present": _sum(chosen.unpacked_bytes[here]),
                "bytes_missing": _sum(chosen.size_bytes[~here]),
                "sizes_exact": bool((chosen.size_exact == "true").all() and (chosen.unpacked_exact == "true").all()),
            }
        )
    return pd.DataFrame(lines)


def make_plan(name: str, rows: pd.DataFrame, keep_archives: bool = False) -> Plan:
    """The plan for building ``rows``: which are missing, and the space they need where they go."""
    present = is_present(rows)
    missing = rows[~present]
    roots = [Path(root) for root in dict.fromkeys(rows.root)]
    kept = 0
    for root in roots:
        if downloads_dir(root).is_dir():
            here = missing[missing.root == str(root)]
            kept += sum(kept_bytes(partial_download_path(root, r.file_id, r.archive)) for r in here.itertuples())
    # Each filesystem must hold what every tree on it takes.
    by_device: dict[int, list[Path]] = {}
    for root in roots:
        by_device.setdefault(existing_ancestor(root).stat().st_dev, []).append(root)
    free, short_of, shortfall = 0, None, 0  # the filesystem shortest of room: the first, until one is shorter
    for trees in by_device.values():
        need = needed_bytes(missing[missing.root.isin([str(root) for root in trees])], keep_archives)
        room = free_space(trees[0])
        if need - room > shortfall or short_of is None:
            free, short_of, shortfall = room, trees[0], max(0, need - room)
    return Plan(name, roots, missing, int(present.sum()), keep_archives, free, kept, short_of, shortfall)
