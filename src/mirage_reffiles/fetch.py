"""Fetch one reference file into MIRAGE_DATA: download, verify, unpack, record.

Nothing takes its final name until it is complete and verified: a dark is
gunzipped into a ``.part`` sibling and renamed; a tarball is extracted into a
staging folder, its members moved into place, and its record written last.
The compressed bytes stay in a partial file until then, so an interrupted
run resumes instead of starting over.

Standard library only: the download jobs import this under ``python -S``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from . import layout
from .transfer import Expected, NullSink, Progress, RetryPolicy, download
from .unpack import GunzipSink, UnpackError, extract_tarball, move_into_place


def _write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = layout.temporary_path(path)
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def _finish_download(partial: Path, kept_archive: Path | None) -> None:
    """Keep the compressed file where asked, else free its space."""
    if kept_archive is None:
        partial.unlink(missing_ok=True)
    else:
        kept_archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, kept_archive)


def _record(file_id: str, url: str, size: int, sha256: str, files: list[tuple[str, int]]) -> dict:
    return {
        "file_id": file_id,
        "url": url,
        "size": size,
        "sha256": sha256,
        "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": [{"path": path, "size": size} for path, size in files],
    }


def fetch_gzip(
    url: str,
    mirage_data: Path,
    file_id: str,
    destination: str,
    *,
    expected: Expected | None = None,
    kept_archive: Path | None = None,
    policy: RetryPolicy | None = None,
) -> Path:
    """Download a ``.gz`` file and gunzip it to ``mirage_data/destination``.

    The bytes are decompressed as they arrive (one pass, no second copy read
    back), the gzip trailer is checked, and only then is the file renamed
    into place. Returns the final path.
    """
    final = mirage_data / destination
    partial = layout.partial_download_path(mirage_data, file_id, "gz")
    sink = GunzipSink(layout.temporary_path(final))
    try:
        size, sha256 = download(url, partial, sink, expected=expected, policy=policy, progress=Progress(file_id))
        sink.close()
    except UnpackError:
        sink.discard()
        partial.unlink(missing_ok=True)  # the compressed bytes are what is wrong
        raise
    except BaseException:
        sink.discard()
        raise
    _write_record(
        layout.record_path(mirage_data, file_id),
        _record(file_id, url, size, sha256, [(destination, sink.size)]),
    )
    os.replace(sink.path, final)
    _finish_download(partial, kept_archive)
    return final


def fetch_tarball(
    url: str,
    mirage_data: Path,
    file_id: str,
    *,
    expected: Expected | None = None,
    kept_archive: Path | None = None,
    policy: RetryPolicy | None = None,
) -> Path:
    """Download a ``.tar.gz`` file and extract its members under ``mirage_data``.

    Members are extracted into a staging folder (refusing unsafe ones), moved
    into place, and the record listing them is written last: it is the mark
    that the extraction is complete. Returns the record's path.
    """
    partial = layout.partial_download_path(mirage_data, file_id, "tar.gz")
    size, sha256 = download(url, partial, NullSink(), expected=expected, policy=policy, progress=Progress(file_id))
    staging = layout.staging_dir(mirage_data, file_id)
    try:
        members = extract_tarball(partial, staging)
    except UnpackError:
        partial.unlink(missing_ok=True)
        raise
    move_into_place(staging, mirage_data)
    record = layout.record_path(mirage_data, file_id)
    _write_record(record, _record(file_id, url, size, sha256, members))
    _finish_download(partial, kept_archive)
    return record
