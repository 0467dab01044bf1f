"""Offline demo: the real build, against a synthetic mirror served on 127.0.0.1.

    python -m mirage_reffiles.demo [GROUP] [--dir demo] [--cores 8]

Builds a mirror of every file in the table (small made-up files at the real
paths), serves it over HTTP on 127.0.0.1, runs ``snakemake --cores N GROUP``
against it, then runs it again to show that a complete tree costs no request.
The files it fetches are synthetic: for trying the build, not for Mirage.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.testing.mirror import build_mirror
from mirage_reffiles.testing.server import serve
from mirage_reffiles.tree.layout import SHIPPED_TABLE, WORKFLOW_DIR


def run_build(group: str, mirage_data: Path, base_url: str, table: Path, cores: int, workdir: Path) -> None:
    command = [
        sys.executable, "-m", "snakemake", "-s", str(WORKFLOW_DIR / "Snakefile"), "--cores", str(cores), group,
        "--config", f"base_url={base_url}", f"mirage_data={mirage_data}", f"reference_table={table}",
        "announce_environment=false",
    ]  # fmt: skip
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=workdir, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("group", nargs="?", default="nircam_linearized", help="target group (default: %(default)s)")
    parser.add_argument("--dir", type=Path, default=Path("demo"), help="scratch folder (default: %(default)s)")
    parser.add_argument("--cores", type=int, default=8)
    args = parser.parse_args(argv)
    folder = args.dir.resolve()
    mirror = folder / "mirror"
    table = folder / "mirror_table.csv"
    if not table.exists():
        print(f"Building a synthetic mirror (made-up files at the real paths) in {mirror} ...", flush=True)
        pinned, _ = build_mirror(mirror, load_table(SHIPPED_TABLE))
        pinned.to_csv(table, index=False)  # the table, with the mirror's exact sizes and SHA-256
    mirage_data = folder / "mirage_data"
    with serve(mirror) as server:
        print(f"Serving it at {server.url}", flush=True)
        run_build(args.group, mirage_data, server.url, table, args.cores, folder)
        first = len(server.requests)
        run_build(args.group, mirage_data, server.url, table, args.cores, folder)
        again = len(server.requests) - first
    files = [path for path in mirage_data.rglob("*") if path.is_file() and ".reffiles" not in path.parts]
    print(
        f"\nDemo done: {len(files)} files under {mirage_data}; HTTP requests: {first} for the build, "
        f"{again} for the run after it.\nThese files are synthetic (made-up bytes at the real paths), for trying "
        "the build only: do not point Mirage at them.\n\nFor the real files, from STScI (preview first, then fetch):\n"
        f"  snakemake -n {args.group} --config mirage_data=/data/mirage_data\n"
        f"  snakemake --cores 8 {args.group} --config mirage_data=/data/mirage_data"
    )
    sys.exit(0 if again == 0 else 1)


if __name__ == "__main__":
    main()
