"""Fetch one reference file into MIRAGE_DATA: download, verify, unpack, record.

Nothing takes its final name until it is complete and verified: a dark is
gunzipped into a ``.part`` sibling and renamed; a tarball is extracted into a
staging folder, its members moved into place, and its record written last.
The compressed bytes stay in a partial file until then, so an interrupted
run resumes instead of starting over. One run at a time works on a file:
a second waits on a per-file lock, then finds the work done.

Standard library only: the download jobs import this under ``python -S``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import layout
from .disk import exclusive, is_disk_full, require_free_space
from .records import Produced, Record, read_record, write_record
from .transfer import Expected, FetchError, Progress, RetryPolicy, download
from .unpack import GunzipSink, UnpackError, extract_tarball, move_into_place


def _finish_download(partial: Path, kept_archive: Path | None) -> None:
    """Keep the compressed file where asked, else free its space."""
    if kept_archive is None:
        partial.unlink(missing_ok=True)
    else:
        kept_archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, kept_archive)


def _is_complete(mirage_data: Path, file_id: str) -> bool:
    """True when a record exists and every file it lists is in place (another run did it)."""
    record = read_record(mirage_data, file_id)
    return record is not None and all((mirage_data / item.path).is_file() for item in record.files)


def _disk_full(error: OSError, what: str) -> FetchError:
    return FetchError(f"disk full while writing {what} ({error.strerror}); free some space and run again")


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
    with exclusive(layout.lock_path(mirage_data, file_id), file_id):
        if _is_complete(mirage_data, file_id):
            return final
        partial = layout.partial_download_path(mirage_data, file_id, "gz")
        sink = GunzipSink(layout.temporary_path(final))

        def reserve(remaining: int) -> None:
            # The unpacked file is at least as large as what is still to come.
            require_free_space(final, 2 * remaining, file_id)

        try:
            size, sha256 = download(
                url, partial, sink, expected=expected, policy=policy, progress=Progress(file_id), reserve=reserve
            )
            sink.close()
        except UnpackError:
            sink.discard()
            partial.unlink(missing_ok=True)  # the compressed bytes are what is wrong
            raise
        except OSError as error:
            sink.discard()
            if is_disk_full(error):
                raise _disk_full(error, destination) from None
            raise
        except BaseException:
            sink.discard()
            raise
        write_record(mirage_data, Record(file_id, url, size, sha256, [Produced(destination, sink.size, sink.sha256)]))
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
    with exclusive(layout.lock_path(mirage_data, file_id), file_id):
        if _is_complete(mirage_data, file_id):
            return layout.record_path(mirage_data, file_id)
        partial = layout.partial_download_path(mirage_data, file_id, "tar.gz")
        staging = layout.staging_dir(mirage_data, file_id)

        def reserve(remaining: int) -> None:
            require_free_space(partial, remaining, file_id)

        try:
            check = GunzipSink(None)  # the CRC of the whole stream, which tarfile never reads
            size, sha256 = download(
                url, partial, check, expected=expected, policy=policy, progress=Progress(file_id), reserve=reserve
            )
            check.close()
            members = extract_tarball(partial, staging)
            move_into_place(staging, mirage_data)
        except UnpackError:
            partial.unlink(missing_ok=True)
            raise
        except OSError as error:
            if is_disk_full(error):
                raise _disk_full(error, f"the members of {file_id}") from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        record = write_record(mirage_data, Record(file_id, url, size, sha256, members))
        _finish_download(partial, kept_archive)
    return record
