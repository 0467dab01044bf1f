"""Ask the server for every file's exact size and Last-Modified, and write them
into the table (marked exact), so previews and checks use real numbers.

    python -m mirage_reffiles.sizes [--table config/reference_files.csv] [--base-url URL]

HEAD first; a server that does not answer HEAD properly is asked for one byte
with a Range request, whose Content-Range carries the full length.
"""

from __future__ import annotations

import argparse
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import requests

from mirage_reffiles.errors import SizeError
from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.transfer.http import USER_AGENT
from mirage_reffiles.tree.layout import add_table_options, default_base_url, table_output


def remote_size(session: requests.Session, url: str, timeout: float = 30) -> tuple[int, str]:
    """``(size in bytes, Last-Modified or "")`` of ``url``."""
    response = session.head(url, allow_redirects=True, timeout=timeout)
    length = response.headers.get("Content-Length", "")
    if response.ok and length.isdigit() and "Content-Encoding" not in response.headers:
        return int(length), response.headers.get("Last-Modified", "")
    with session.get(url, headers={"Range": "bytes=0-0"}, stream=True, timeout=timeout) as response:
        match = re.fullmatch(r"bytes 0-0/(\d+)", response.headers.get("Content-Range", ""))
        if response.status_code == 206 and match:
            return int(match.group(1)), response.headers.get("Last-Modified", "")
        raise SizeError(f"{url}: HTTP {response.status_code}, no size in HEAD or in a one-byte range answer")


def refresh_sizes(table: pd.DataFrame, base_url: str, jobs: int = 8) -> pd.DataFrame:
    """A copy of ``table`` with each file's exact size and Last-Modified from the server.

    A file whose size changed loses its pinned SHA-256 (it is no longer the
    file that was pinned) and unpacked size.
    """
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    with requests.Session() as session, ThreadPoolExecutor(jobs) as pool:
        session.headers["User-Agent"] = USER_AGENT
        session.headers["Accept-Encoding"] = "identity"
        answers = list(pool.map(lambda path: remote_size(session, base_url + path), table.path))
    refreshed = table.copy()
    for file_id, (size, modified) in zip(table.index, answers, strict=True):
        row = refreshed.loc[file_id]
        if row.size_exact == "true" and row.size_bytes != str(size):
            refreshed.loc[file_id, ["sha256", "unpacked_exact"]] = ["", "false"]
        refreshed.loc[file_id, ["size_bytes", "size_exact", "last_modified"]] = [str(size), "true", modified]
    return refreshed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_table_options(parser)
    parser.add_argument(
        "--base-url", default=default_base_url(), help="server to ask (default: $MIRAGE_REFFILES_BASE_URL, else STScI)"
    )
    parser.add_argument("--jobs", type=int, default=8, help="requests at once (default: %(default)s)")
    args = parser.parse_args(argv)
    table = load_table(args.table)
    try:
        refreshed = refresh_sizes(table, args.base_url, args.jobs)
    except (SizeError, requests.RequestException) as error:
        sys.exit(f"no change to {args.table}: {error}")
    output = table_output(args.table, args.output)
    refreshed.to_csv(output, index=False)
    changed = int((refreshed.size_bytes != table.size_bytes).sum())
    total = refreshed.size_bytes.astype(int).sum()
    print(f"{output}: exact sizes for {len(table)} files ({changed} changed), {total / 1e9:,.2f} GB in all")


if __name__ == "__main__":
    main()
