"""Pin the table to a trusted tree: copy each recorded download's exact size
and SHA-256, and its unpacked size, into the table, so later downloads must
match them byte for byte and previews are exact.

    python -m mirage_reffiles.pin MIRAGE_DATA [--table config/reference_files.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.tree.layout import add_table_options, table_output
from mirage_reffiles.tree.records import read_record


def pin_table(table: pd.DataFrame, mirage_data: Path) -> tuple[pd.DataFrame, list[str]]:
    """A copy of ``table`` with exact sizes and SHA-256 for every row that has a record.

    Returns the new table and the ``file_id`` of each row pinned.
    """
    pinned = table.copy()
    done = []
    for file_id in table.index:
        record = read_record(mirage_data, file_id)
        if record is None or not record.sha256:  # not fetched, or adopted without its download
            continue
        unpacked = sum(item.size for item in record.files)
        pinned.loc[file_id, ["size_bytes", "size_exact", "unpacked_bytes", "unpacked_exact", "sha256"]] = [
            str(record.size),
            "true",
            str(unpacked),
            "true",
            record.sha256,
        ]
        done.append(file_id)
    return pinned, done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mirage_data", type=Path, help="a tree built by this workflow, whose downloads you trust")
    add_table_options(parser)
    args = parser.parse_args(argv)
    table = load_table(args.table)
    pinned, done = pin_table(table, args.mirage_data)
    output = table_output(args.table, args.output)
    pinned.to_csv(output, index=False)
    print(f"Pinned {len(done)} of {len(table)} rows of {args.table} to {args.mirage_data}, written to {output}")


if __name__ == "__main__":
    main()
