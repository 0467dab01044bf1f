"""A faithful re-implementation of Mirage's downloader loop, for the benchmark.

As mirage.reference_files.downloader does it: one file at a time with
requests (stream=True, 2 KB chunks, no timeout, no retry, no check), every
file downloaded first, then each dark moved beside its place and gunzipped,
the .gz kept.

    python bench/mirage_loop.py DOWNLOAD_DIR URL DESTINATION [URL DESTINATION ...]
"""

import gzip
import shutil
import sys
from pathlib import Path

import requests


def download_file(url, filename, output_directory):
    local = Path(output_directory) / filename
    if local.is_file():
        return local
    with requests.get(url, stream=True) as response, open(local, "wb") as handle:
        for chunk in response.iter_content(chunk_size=2048):
            if chunk:
                handle.write(chunk)
    return local


def main(directory, pairs):
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    downloaded = [(download_file(url, Path(url).name, directory), Path(dest)) for url, dest in pairs]
    for archive, destination in downloaded:
        destination.parent.mkdir(parents=True, exist_ok=True)
        moved = destination.with_name(destination.name + ".gz")
        shutil.move(archive, moved)
        with gzip.open(moved, "rb") as source, open(destination, "wb") as target:
            shutil.copyfileobj(source, target)


if __name__ == "__main__":
    args = sys.argv[2:]
    main(sys.argv[1], list(zip(args[0::2], args[1::2], strict=True)))
