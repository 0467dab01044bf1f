"""Job adapter: fetch one reference file into MIRAGE_DATA.

Run by rules/fetch.smk as ``python -S scripts/fetch_reffile.py ...`` with the
package on PYTHONPATH; all the work is in mirage_reffiles.fetch.
"""

import argparse
import sys
from pathlib import Path

from mirage_reffiles.fetch import download_archive, fetch_gzip, fetch_tarball
from mirage_reffiles.transfer import Expected, FetchError, RetryPolicy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mirage-data", required=True, type=Path)
    parser.add_argument("--file-id", required=True)
    parser.add_argument("--archive", required=True, choices=["gz", "tar.gz"])
    parser.add_argument("--destination", help="gz only: the unpacked file's path under MIRAGE_DATA")
    parser.add_argument("--size", type=int, help="exact size in bytes, checked")
    parser.add_argument("--sha256", help="checked when given")
    parser.add_argument("--keep-archive", type=Path, help="keep the downloaded archive here")
    parser.add_argument("--download-to", type=Path, help="only download (checked, not unpacked) to this file")
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--connect-timeout", type=float, default=30)
    parser.add_argument("--read-timeout", type=float, default=60)
    args = parser.parse_args(argv)
    common = {
        "expected": Expected(size=args.size, sha256=args.sha256),
        "kept_archive": args.keep_archive,
        "policy": RetryPolicy(
            retries=args.retries, connect_timeout=args.connect_timeout, read_timeout=args.read_timeout
        ),
    }
    try:
        if args.download_to:
            del common["kept_archive"]
            download_archive(args.url, args.download_to, args.mirage_data, args.file_id, **common)
        elif args.archive == "gz":
            fetch_gzip(args.url, args.mirage_data, args.file_id, args.destination, **common)
        else:
            fetch_tarball(args.url, args.mirage_data, args.file_id, **common)
    except FetchError as error:
        sys.exit(f"{args.file_id}: {error}")


if __name__ == "__main__":
    main()
