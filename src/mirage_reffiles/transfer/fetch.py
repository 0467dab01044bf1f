"""Fetch one reference file into MIRAGE_DATA: download, verify, unpack, record.

Nothing takes its final name until it is complete and verified: a dark is
gunzipped into a ``.part`` sibling and renamed; a tarball is extracted into a
staging folder, its members moved into place, and its record written last.
The compressed bytes stay in a partial file until then, so an interrupted
run resumes instead of starting over. One run at a time works on a file:
a second waits on a per-file lock, then finds the work done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from mirage_reffiles.errors import FetchError, Interrupted, Outdated, UnpackError, VerifyError
from mirage_reffiles.transfer import interrupt, segments
from mirage_reffiles.transfer.bounds import Bounds, Expected
from mirage_reffiles.transfer.http import RetryPolicy, download, is_local, local_path
from mirage_reffiles.transfer.partial import kept_bytes, remove_partial
from mirage_reffiles.transfer.progress import Progress
from mirage_reffiles.tree import layout
from mirage_reffiles.tree.disk import exclusive, is_disk_full, require_free_space, take_final_names
from mirage_reffiles.tree.door import BOOKKEEPING, Lane, is_plain_name, open_file, writable
from mirage_reffiles.tree.layout import tarball_member_destination
from mirage_reffiles.tree.records import Produced, Record, claims, read_record, write_record
from mirage_reffiles.unpack.content import head_of, is_fits
from mirage_reffiles.unpack.gunzip import ArchiveSink, GunzipSink, ResumableGunzipSink, unpacked_size_hint
from mirage_reffiles.unpack.inflate import available as inflate_available
from mirage_reffiles.unpack.tar import Rename, extract_tarball, move_into_place

#: The lock held while a tarball's members take their places: the claims of other rows are read under it.
CLAIMS_LOCK = ".claims"


def _finish_download(mirage_data: Path, partial: Path | None, kept_archive: Path | None) -> None:
    """Keep the compressed file where asked (in the kept archives' folder), else free its space."""
    if partial is None:
        return
    if kept_archive is None:
        remove_partial(partial)
    else:
        kept_archive = writable(mirage_data, kept_archive, Lane.inside(layout.ARCHIVE_DIR))
        kept_archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, kept_archive)


def _partial(url: str, mirage_data: Path, file_id: str, archive: str, kept_archive: Path | None) -> Path | None:
    """Where the compressed bytes are kept while they arrive; None to read a local file in place."""
    if is_local(url) and kept_archive is None:
        return None
    partial = layout.partial_download_path(mirage_data, file_id, archive)
    return writable(mirage_data, partial, BOOKKEEPING)


def _row_lock(mirage_data: Path, file_id: str, log: TextIO | None, suffix: str = ""):
    """The lock of row ``file_id``, which names it and its files under ``.reffiles/``: an id from a
    table is a name, never a path (``..`` would make the staging folder all of ``.reffiles/``)."""
    if not is_plain_name(file_id):
        raise FetchError(f"row id {file_id!r} refused: it is not a plain name (letters, digits, '_', '.', '-';"
                         " not '.' or '..')")  # fmt: skip
    return exclusive(layout.lock_path(mirage_data, file_id + suffix), file_id, log)


def _gunzip_sink(path: Path, resumable: bool, bounds: Bounds) -> GunzipSink | ResumableGunzipSink:
    """Gunzips into ``path`` within ``bounds``; with ``resumable``, keeping only the compressed bytes since the
    last resume point."""
    if resumable and inflate_available():
        return ResumableGunzipSink(path, check=bounds.check_unpacked)
    return GunzipSink(path, check=bounds.check_unpacked)


def _is_complete(mirage_data: Path, file_id: str) -> bool:
    """True when a record exists and every file it lists is in place (another run did it)."""
    record = read_record(mirage_data, file_id)
    return record is not None and all((mirage_data / item.path).is_file() for item in record.files)


def _receive_checked(
    url, partial, sink, file_id, bounds, policy, room_factor, what, log, fits=False, mirrors=()
) -> tuple[int, str]:
    """Download into ``sink`` within ``bounds`` and close it; on bad bytes drop them, on a full disk say so.

    Before the body arrives, ``room_factor`` times what is still to come
    must be free where the bytes go. With ``fits`` (the sink unpacked a
    dark), it must begin as a FITS file does (a gzipped error page or a file
    gzipped twice unpacks into something else), and have the size the table
    pins, when it pins one.
    """

    def reserve(remaining: int) -> None:
        require_free_space(partial or sink.path, room_factor * remaining, file_id)

    try:
        received = download(url, partial, sink, bounds=bounds, policy=policy, reserve=reserve, log=log,
                            progress=Progress(file_id, stream=log), mirrors=mirrors)  # fmt: skip
        sink.close()
        if fits and not is_fits(head := head_of(sink.path)):
            raise VerifyError(f"{url}: {what} is not a FITS file (it begins {head[:16]!r}); the bytes were discarded")
        if fits:
            bounds.check_unpacked_total(sink.size)
        return received
    except (UnpackError, VerifyError):
        sink.discard()
        if partial is not None:
            remove_partial(partial)  # the compressed bytes are what is wrong
        raise
    except BaseException as error:
        sink.discard(keep=sink.resumable)  # a resumable sink's output is part of what a later run resumes from
        if isinstance(error, OSError) and is_disk_full(error):
            raise _disk_full(error, what) from None
        raise


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
    log: TextIO | None = None,
    mirrors: tuple[str, ...] = (),
) -> Path:
    """Download a ``.gz`` file and gunzip it to ``mirage_data/destination``.

    The bytes are decompressed as they arrive (one pass, no second copy read
    back), the gzip trailer is checked, and only then is the file renamed
    into place. Returns the final path. ``mirrors`` (the same file
    elsewhere) may serve segments of it (see :mod:`.transfer.segments`).
    What arrives and what it unpacks to stay within the bounds of
    ``expected`` (see :mod:`.transfer.bounds`).
    """
    final = writable(mirage_data, destination, Lane())
    bounds = Bounds(expected)
    with _row_lock(mirage_data, file_id, log):
        if _is_complete(mirage_data, file_id):
            return final
        partial = _partial(url, mirage_data, file_id, "gz", kept_archive)
        unpacked = writable(mirage_data, layout.temporary_path(final), Lane())
        sink = _gunzip_sink(unpacked, partial is not None and kept_archive is None, bounds)
        # The unpacked file is at least as large as the download.
        size, sha256 = _receive_checked(
            url, partial, sink, file_id, bounds, policy, 2, destination, log, fits=True, mirrors=mirrors
        )
        produced = Produced(destination, sink.size, sink.sha256, sink.crc32)
        write_record(mirage_data, Record(file_id, url, size, sha256, [produced]))
        take_final_names([(sink.path, final)])
        _finish_download(mirage_data, partial, kept_archive)
    return final


def fetch_tarball(
    url: str,
    mirage_data: Path,
    file_id: str,
    *,
    expected: Expected | None = None,
    kept_archive: Path | None = None,
    policy: RetryPolicy | None = None,
    lane: Lane | None = None,
    rename: Rename = tarball_member_destination,
    accept: Callable[[Path, list[Produced]], str | None] | None = None,
    log: TextIO | None = None,
    mirrors: tuple[str, ...] = (),
) -> Path:
    """Download a ``.tar.gz`` file and extract its members under ``mirage_data``.

    Members are extracted into a staging folder (named by ``rename``,
    refusing unsafe ones and, with ``lane``, any outside the folder its kind
    owns), moved into place, and the record listing them is written last: it
    is the mark that the extraction is complete. ``accept(staging, files)``
    sees the extracted files before any moves: it raises
    :class:`VerifyError` or :class:`UnpackError` to refuse the archive
    (whose download is then deleted), and may clear what they replace; what
    it returns is recorded as the files' version. The download, its members
    and its inflated stream stay within the bounds of ``expected`` (see
    :mod:`.transfer.bounds`); an archive with no file is refused. Returns the
    record's path.
    """
    lane = lane or Lane()
    bounds = Bounds(expected)
    with _row_lock(mirage_data, file_id, log):
        if _is_complete(mirage_data, file_id):
            return layout.record_path(mirage_data, file_id)
        partial = _partial(url, mirage_data, file_id, "tar.gz", kept_archive)
        staging = writable(mirage_data, layout.staging_dir(mirage_data, file_id), BOOKKEEPING, is_dir=True)
        # Unpacked once complete: extracting checks the gzip stream to its CRC, so it is inflated once.
        sink = ArchiveSink(partial or staging)
        size, sha256 = _receive_checked(url, partial, sink, file_id, bounds, policy, 1, file_id, log, False, mirrors)
        archive = partial or local_path(url)
        try:
            members = extract_tarball(archive, staging, log, size=unpacked_size_hint(archive), lane=lane,
                                      rename=rename, bounds=bounds)  # fmt: skip
            version = accept(staging, members) if accept is not None else None
            # The first row to land keeps a path: the claims are read, and the members moved, one run at a time.
            with exclusive(layout.lock_path(mirage_data, CLAIMS_LOCK), file_id, log):
                claimed = lane.claiming(claims(mirage_data, but=file_id))
                move_into_place(staging, mirage_data, members, claimed)
                record = write_record(mirage_data, Record(file_id, url, size, sha256, members, version=version or ""))
        except (UnpackError, VerifyError):
            if partial is not None:
                remove_partial(partial)
            raise
        except OSError as error:
            if is_disk_full(error):
                raise _disk_full(error, f"the members of {file_id}") from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _finish_download(mirage_data, partial, kept_archive)
    return record


def download_archive(
    url: str,
    output: Path,
    mirage_data: Path,
    file_id: str,
    *,
    expected: Expected | None = None,
    policy: RetryPolicy | None = None,
    log: TextIO | None = None,
    mirrors: tuple[str, ...] = (),
) -> Path:
    """Download a ``.gz`` or ``.tar.gz`` file as it is to ``output``, checked
    (size, SHA-256, gzip CRC, and the bounds of ``expected``: a tarball's stream
    as :func:`fetch_tarball` bounds it) but not unpacked: for a host that
    downloads while other machines unpack."""
    bounds = Bounds(expected)
    with _row_lock(mirage_data, file_id, log, ".download"):
        output = writable(mirage_data, output, Lane(own=()))  # into the build's own folders: archives/, .reffiles/
        partial = writable(mirage_data, layout.temporary_path(output), Lane(own=()))
        tar = output.name.endswith(".tar.gz")
        check = GunzipSink(None, near=partial, check=bounds.check_tar_stream if tar else bounds.check_unpacked)
        _receive_checked(url, partial, check, file_id, bounds, policy, 1, output.name, log, False, mirrors)
        take_final_names([(partial, output)])
    return output


@dataclass
class FetchRequest:
    """One row of the table to fetch, as a build job asks for it."""

    url: str
    mirage_data: Path
    file_id: str
    archive: str  # "gz" (gunzipped to destination) or "tar.gz" (extracted under mirage_data)
    destination: str = ""
    expected: Expected = field(default_factory=Expected)
    kept_archive: Path | None = None  # keep the download here
    download_to: Path | None = None  # only download, checked, to this file
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    kind: str = ""  # a tarball's kind and instrument say where it may unpack (layout.TARBALL_FOLDERS)
    instrument: str = ""
    claimed: dict[str, str] = field(default_factory=dict)  # files of other rows (the darks) -> their row's id
    mirrors: tuple[str, ...] = ()  # the same file from further sources, tried in order after url
    connections: int | None = None  # the most connections of this process at once (the downloads cap)
    segment_size: int = segments.SEGMENT_SIZE  # bytes of a segment (0: one connection per file)


def fetch(request: FetchRequest, log: TextIO | None = None) -> Path:
    """Do what ``request`` asks; the file that stands for it being done is returned.

    Its sources (``url``, then each of ``mirrors``) are tried in order: one
    that fails in any way (unreachable, a 404, out of retries, a redirect
    elsewhere than http(s), an error of any kind) gives way to the next, and
    the last one's failure is raised as a :class:`FetchError`. While all of
    them may serve segments of a large file, bytes that fail a check (a
    wrong size or digest, not a FITS file, a refused archive) were discarded
    and are fetched again from one source at a time, starting with the same
    one: a proxy's or the network's hiccup heals, and a source serving bad
    bytes is found out, before the error stands.
    """
    out = log or sys.stderr
    segments.BUDGET.configure(request.connections, request.segment_size)
    sources = [request.url, *request.mirrors]
    failure: FetchError | None = None
    alone = False  # after bad bytes: no more segments from other sources
    index = 0
    while index < len(sources):
        url = sources[index]
        others = () if alone else tuple(sources[:index] + sources[index + 1 :])
        try:
            done = _fetch_from(request, url, others, log)
            if len(sources) > 1:
                print(f"{request.file_id}: served by {url}", file=out, flush=True)
            return done
        except (Interrupted, Outdated):
            raise
        except (VerifyError, UnpackError) as error:
            failure = error
            if alone:
                index += 1
            if index < len(sources):
                again = "once more from the start" if not alone else f"from the next source, {sources[index]}"
                alone_from = f" from {url} alone" if not alone and len(sources) > 1 else ""
                print(f"{request.file_id}: {error}; fetching it {again}{alone_from}", file=out, flush=True)
            alone = True
        except Exception as error:  # whatever a source causes, the next source is tried
            failure = error if isinstance(error, FetchError) else FetchError(f"{url}: {type(error).__name__}: {error}")
            if index + 1 < len(sources):
                print(f"{request.file_id}: {failure}; trying the next source, {sources[index + 1]}", file=out,
                      flush=True)  # fmt: skip
            index += 1
    raise failure


def _fetch_from(request: FetchRequest, url: str, mirrors: tuple[str, ...], log: TextIO | None) -> Path:
    """One try of ``request`` from ``url``, with segments from ``mirrors`` too."""
    common = {"expected": request.expected, "policy": request.policy, "log": log, "mirrors": mirrors}
    if request.download_to is not None:
        return download_archive(url, request.download_to, request.mirage_data, request.file_id, **common)
    if request.archive == "gz":
        return fetch_gzip(url, request.mirage_data, request.file_id, request.destination,
                          kept_archive=request.kept_archive, **common)  # fmt: skip
    lane = Lane.of(request.kind, request.instrument, request.claimed)
    return fetch_tarball(url, request.mirage_data, request.file_id, kept_archive=request.kept_archive,
                         lane=lane, **common)  # fmt: skip


def twice_on_bad_bytes(once: Callable[[], Path], file_id: str, log: TextIO | None = None) -> Path:
    """``once()``, and once more from the start when its bytes failed a check (they were discarded);
    not when they are whole but outdated (the same bytes would come again)."""
    try:
        return once()
    except Outdated:
        raise
    except (VerifyError, UnpackError) as error:
        print(f"{file_id}: {error}; fetching it once more from the start", file=log or sys.stderr, flush=True)
        return once()


class BestEffortLog:
    """A job's log that never fails the job: on a full disk its lines are dropped,
    and the download's own error (if any) says what is wrong."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def _unless_disk_full(self, action, *args) -> int:
        try:
            return action(*args) or 0
        except OSError as error:
            if not is_disk_full(error):
                raise
            return 0

    def write(self, text: str) -> int:
        return self._unless_disk_full(self._stream.write, text)

    def flush(self) -> None:
        self._unless_disk_full(self._stream.flush)

    def close(self) -> None:
        self._unless_disk_full(self._stream.close)


def fetch_logged(request: FetchRequest, log_path: str | Path, fetcher: Callable = fetch) -> Path:
    """``fetcher(request, log)`` (:func:`fetch` by default) for a build job: progress and any failure
    go to ``log_path``.

    Build jobs run as threads of one Snakemake process: the socket layer and
    the hashing and inflating libraries release the GIL while they work. A
    download stopped on request (see :mod:`.interrupt`) is noted with the
    bytes it kept, for the run's last line.
    """
    try:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open_file(Path(log_path), "w", buffering=1)  # line by line: nothing left to fail at close
    except OSError as error:
        if not is_disk_full(error):
            raise
        handle = open(os.devnull, "w")  # noqa: SIM115 (no room for a log: the download's own error will say why)
    with contextlib.closing(BestEffortLog(handle)) as log:
        try:
            return fetcher(request, log)
        except Interrupted as error:
            print(f"{request.file_id}: {error}; the bytes so far are kept", file=log, flush=True)
            partial = layout.partial_download_path(request.mirage_data, request.file_id, request.archive)
            interrupt.STOPPED[request.file_id] = kept_bytes(partial)  # for the run's last line
            raise
        except FetchError as error:
            print(f"{request.file_id}: {error}", file=log, flush=True)
            raise FetchError(f"{request.file_id}: {error}") from None


def fetch_member(path: str | Path, fetches: list[tuple[Callable, object]], log_path: str | Path) -> Path:
    """A file of an archive asked for by its path: each ``(fetcher, request)`` in turn (the archives
    whose lane holds it) until it is in place; :class:`FetchError` when none of them holds it."""
    for fetcher, request in fetches:
        fetch_logged(request, log_path, fetcher)
        if Path(path).is_file():
            return Path(path)
    names = ", ".join(request.file_id for _, request in fetches) or "none"
    raise FetchError(
        f"{path} is in no archive whose folder holds it ({names}): check the name (`ls` the folder; "
        "`snakemake status` lists the targets)"
    )
