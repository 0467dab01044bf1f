"""Ask the server for every file's exact size and Last-Modified, and write them
into the table (marked exact), so previews and checks use real numbers.

    python -m mirage_reffiles.sizes [--table config/reference_files.csv] [--base-url URL] [--clear-changed-pins]

HEAD first; a server that does not answer HEAD properly is asked for one byte
with a Range request, whose Content-Range carries the full length. An answer
a download would refuse (a page: text/html or text/plain, a Content-Encoding,
no length) leaves the table as it was: a proxy's login page is not the file.
A row pinned to its bytes (SHA-256, exact unpacked size) whose size changed
on the server is left as it was, and named, unless --clear-changed-pins.
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd

from mirage_reffiles.errors import FetchError, SizeError, TransientError
from mirage_reffiles.sources.mirage import load_table
from mirage_reffiles.transfer.clock import Clock
from mirage_reffiles.transfer.http import USER_AGENT, not_the_file
from mirage_reffiles.tree.layout import add_table_options, default_base_url, table_output


def _ask(url: str, timeout: float, method: str = "HEAD", headers: dict | None = None) -> tuple[int, dict]:
    """``(status, headers)`` of one request under the clock every request of this package has
    (:class:`.clock.Clock`: connecting and the whole answer within ``timeout``, a stop ends it)."""
    request = urllib.request.Request(
        url, method=method, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    )
    try:
        with Clock(timeout, f"answer to {method}") as clock, clock.open(request, timeout) as response:
            return response.status, response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.headers
    except (TransientError, FetchError, urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise SizeError(f"{url}: {getattr(error, 'reason', error)}") from None


def remote_size(url: str, timeout: float = 30) -> tuple[int, str]:
    """``(size in bytes, Last-Modified or "")`` of ``url``; :class:`SizeError` for an answer a download would
    refuse, or none with a length."""
    status, headers = _ask(url, timeout)
    _refuse_unless_the_file(url, status, headers)
    length = headers.get("Content-Length", "")
    if status < 300 and length.isdigit():
        return int(length), headers.get("Last-Modified", "")
    status, headers = _ask(url, timeout, "GET", {"Range": "bytes=0-0"})
    _refuse_unless_the_file(url, status, headers)
    match = re.fullmatch(r"bytes 0-0/(\d+)", headers.get("Content-Range", ""))
    if status == 206 and match:
        return int(match.group(1)), headers.get("Last-Modified", "")
    raise SizeError(f"{url}: HTTP {status}, no size in HEAD or in a one-byte range answer")


def _refuse_unless_the_file(url: str, status: int, headers) -> None:
    """An answer a download would refuse (see :func:`.http.not_the_file`) says nothing of the file's size."""
    if status < 300 and (problem := not_the_file(headers)):
        raise SizeError(f"{url} {problem}")


@dataclass
class Refresh:
    """What :func:`refresh_sizes` found: the new table, and the rows whose exact size changed on the server."""

    table: pd.DataFrame
    changed: dict[str, tuple[str, int]] = field(default_factory=dict)  # file_id: (size before, size now)
    held: list[str] = field(default_factory=list)  # changed, but pinned: left as they were
    cleared: list[str] = field(default_factory=list)  # changed and pinned: pins cleared, as asked


def _is_pinned(row) -> bool:
    return bool(row.sha256) or row.unpacked_exact == "true"


def refresh_sizes(
    table: pd.DataFrame, base_url: str, jobs: int = 8, clear_changed_pins: bool = False, timeout: float = 30
) -> Refresh:
    """``table`` with each file's exact size and Last-Modified from the server.

    A file whose exact size changed is no longer the file that was pinned:
    a row pinned to its bytes (SHA-256, exact unpacked size) is left as it
    was, unless ``clear_changed_pins``, which takes the new size and clears
    the pins. No pin is cleared otherwise.
    """
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    with ThreadPoolExecutor(jobs) as pool:
        answers = list(pool.map(lambda path: remote_size(base_url + path, timeout), table.path))
    result = Refresh(table.copy())
    refreshed = result.table
    for file_id, (size, modified) in zip(table.index, answers, strict=True):
        row = refreshed.loc[file_id]
        if row.size_exact == "true" and row.size_bytes != str(size):
            result.changed[file_id] = (row.size_bytes, size)
            if _is_pinned(row) and not clear_changed_pins:
                result.held.append(file_id)
                continue
            if _is_pinned(row):
                result.cleared.append(file_id)
            refreshed.loc[file_id, ["sha256", "unpacked_exact"]] = ["", "false"]
        refreshed.loc[file_id, ["size_bytes", "size_exact", "last_modified"]] = [str(size), "true", modified]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_table_options(parser)
    parser.add_argument(
        "--base-url", default=default_base_url(), help="server to ask (default: $MIRAGE_REFFILES_BASE_URL, else STScI)"
    )
    parser.add_argument("--jobs", type=int, default=8, help="requests at once (default: %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=30, help="seconds for each answer, headers included (default: %(default)s)"
    )
    parser.add_argument(
        "--clear-changed-pins",
        action="store_true",
        help="for a pinned row whose size changed on the server: take the new size and clear its SHA-256 and "
        "exact unpacked size (by default such a row is left as it was, and named)",
    )
    args = parser.parse_args(argv)
    table = load_table(args.table)
    try:
        result = refresh_sizes(table, args.base_url, args.jobs, args.clear_changed_pins, args.timeout)
    except SizeError as error:
        sys.exit(f"no change to {args.table}: {error}")
    output = table_output(args.table, args.output)
    result.table.to_csv(output, index=False)
    total = result.table.size_bytes.astype(int).sum()
    print(f"{output}: exact sizes for {len(table)} files, {total / 1e9:,.2f} GB in all")
    notes = dict.fromkeys(result.held, "pinned: left as it was") | dict.fromkeys(result.cleared, "pins cleared")
    for file_id, (before, now) in result.changed.items():
        note = notes.get(file_id, "taken")
        print(f"  {file_id}: changed size on the server, {int(before):,} -> {now:,} bytes ({note})")
    if result.held:
        print(
            f"{len(result.held)} pinned row(s) changed size on the server and were left as they were: their downloads"
            " fail until you pin them again (python -m mirage_reffiles.pin) or rerun with --clear-changed-pins"
        )


if __name__ == "__main__":
    main()
