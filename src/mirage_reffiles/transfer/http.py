"""Resumable, verified byte transfer from a URL into a partial file.

``urllib.request`` does the HTTP: it follows redirects (the server's URLs
are redirects), honours the usual proxy variables and speaks ``file://``.
Connecting and the response headers are bound by one deadline per request,
``connect_timeout + read_timeout`` (see :mod:`.clock`); a read of the body
never blocks for more than :data:`.clock.TICK`: the loop keeps its own
account of timeouts and stalls. Either way a stop asked for
(:mod:`mirage_reffiles.transfer.interrupt`) is noticed within a tick.
"""

from __future__ import annotations

import email.utils
import http.client
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from mirage_reffiles.errors import FetchError, Interrupted, Refused, TransientError, VerifyError
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.bounds import Bounds, Expected
from mirage_reffiles.transfer.clock import TICK, Clock
from mirage_reffiles.transfer.partial import NoStore, PartialStore, remove_partial
from mirage_reffiles.transfer.progress import Progress
from mirage_reffiles.transfer.segments import BUDGET, Segments
from mirage_reffiles.tree.door import open_file

CHUNK_SIZE = 1 << 20
USER_AGENT = "mirage-reffiles"
#: Statuses worth another try: the server is busy or failing for now.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Content types of a page, never of a reference file: an error page from the server or a proxy.
PAGE_TYPES = frozenset({"text/html", "text/plain"})


class Sink(Protocol):
    """Receives every byte of the download, in order, exactly once per attempt."""

    def write(self, chunk: bytes) -> None: ...

    def reset(self) -> None:
        """Forget everything written (the server sent the file from the start)."""


@dataclass
class RetryPolicy:
    """How often and how patiently to try again.

    The wait before try ``n`` is ``backoff * 2 ** (n - 1)`` seconds, capped at
    ``max_backoff``; a server's Retry-After wins when it asks for longer, up
    to ``max_retry_after``. A try that receives nothing for ``read_timeout``
    seconds, or fewer than ``min_speed`` bytes per second over
    ``stall_window`` seconds, has stalled and is retried from where it stands
    (``min_speed`` 0 turns the second check off). ``retries`` counts the
    failed tries in a row: a try that made healthy progress (at least one
    window's worth of bytes, at ``min_speed`` or better over the whole try)
    starts the count again, so a long download over a flaky link goes on,
    while a dead or drip-feeding server runs out of tries. Either way a file
    ends in bounded time: each healthy try brings it closer at ``min_speed``.
    """

    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    min_speed: float = 1000.0
    stall_window: float = 30.0
    max_retry_after: float = 900.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay

    def is_healthy(self, moved: int, elapsed: float) -> bool:
        """Whether a failed try that moved ``moved`` bytes in ``elapsed`` s made progress enough to reset the count."""
        return moved > 0 and moved >= self.min_speed * max(elapsed, self.stall_window)


class _Pace:
    """One try's flow of bytes: a stall (:class:`TransientError`) when it dries up or slows below the minimum."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.last_byte = self.window_start = time.monotonic()
        self.window_bytes = 0

    def update(self, received: int) -> None:
        """After each read, with the bytes it brought (0 for a tick without any)."""
        now = time.monotonic()
        if received:
            self.last_byte = now
        elif now - self.last_byte >= self.policy.read_timeout:
            raise TransientError(f"read timed out (no bytes for {self.policy.read_timeout:g} s)")
        self.window_bytes += received
        elapsed = now - self.window_start
        if elapsed >= self.policy.stall_window:
            if self.window_bytes < self.policy.min_speed * elapsed:
                raise TransientError(
                    f"stalled: {self.window_bytes} bytes in {elapsed:.1f} s, below min_speed"
                    f" ({self.policy.min_speed:g} bytes/s over stall_window {self.policy.stall_window:g} s)"
                )
            self.window_start, self.window_bytes = now, 0


def as_url(location: str) -> str:
    """Turn a plain local folder or file path into a ``file://`` URL."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location):
        return location
    return Path(location).resolve().as_uri()


def as_base_url(location: str) -> str:
    """``location`` as a URL to which a table path can be appended.

    >>> as_base_url("https://example.org/files")
    'https://example.org/files/'
    """
    url = as_url(location)
    return url if url.endswith("/") else url + "/"


def as_base_urls(value: str | Sequence[str]) -> list[str]:
    """Every source in ``value``, primary first: a list, or one string of them separated by commas or spaces.

    >>> as_base_urls("https://example.org/a, https://mirror.example.org/a")
    ['https://example.org/a/', 'https://mirror.example.org/a/']
    """
    items = re.split(r"[,\s]+", value) if isinstance(value, str) else list(value)
    return [as_base_url(item.strip()) for item in items if item.strip()]


def _content_range(value: str | None) -> tuple[int, int | None]:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not match:
        raise TransientError(f"unreadable Content-Range {value!r}")
    total = None if match.group(2) == "*" else int(match.group(2))
    return int(match.group(1)), total


def _retry_after(headers) -> float | None:
    """The seconds a server asks to wait, from Retry-After in either form: seconds or an HTTP date."""
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: our own backoff
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def not_the_file(headers) -> str | None:
    """Why an HTTP answer's body is not the file's own bytes, whatever its status; None when it is."""
    encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        return f"answered with Content-Encoding: {encoding} although identity was asked for (not the file's own bytes)"
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in PAGE_TYPES:
        return f"answered with a page (Content-Type: {content_type}), not the file: an error page from it or a proxy"
    return None


def open_from(url: str, offset: int, policy: RetryPolicy, end: int | None = None):
    """Open ``url`` at byte ``offset`` (up to byte ``end``, excluded, when given).

    Returns ``(response, start, total)``: ``start`` is where the bytes that
    follow begin (0 when the server ignored the Range request) and ``total``
    the full length when the server said it; ``response`` is None when the
    file is already complete (a 416 answer to a request past its end).
    """
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset or end is not None:
        headers["Range"] = f"bytes={offset}-{'' if end is None else end - 1}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with Clock(policy.connect_timeout + policy.read_timeout, "answer from the server") as clock:
            response = clock.open(request, policy.connect_timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # Asked for bytes past the end: complete if the length is ours.
            match = re.fullmatch(r"bytes \*/(\d+)", error.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return None, offset, offset
            return open_from(url, 0, policy)
        message = f"{url} answered HTTP {error.code} {error.reason}"
        if error.code in TRANSIENT_STATUSES:
            raise TransientError(message, _retry_after(error.headers)) from None
        raise FetchError(message) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, FileNotFoundError):
            raise FetchError(f"{url} does not exist") from None
        refused = isinstance(reason, ConnectionRefusedError)
        raise (Refused if refused else TransientError)(f"cannot reach {url}: {reason}") from None
    # The connect timeout governs the handshake; a read waits one tick at most (see _read).
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(min(TICK, policy.read_timeout))
    status = getattr(response, "status", None)
    length = response.headers.get("Content-Length")
    total = int(length) if length is not None and length.isdigit() else None
    if status is None:  # file:// ignores Range: skip ahead ourselves
        response.seek(offset)
        return response, offset, total
    try:
        if problem := not_the_file(response.headers):
            raise TransientError(f"{url} {problem}")
        if status != 206:
            return response, 0, total
        start, total = _content_range(response.headers.get("Content-Range"))
        if start != offset:  # not what was asked for: ask again, keeping what is kept
            raise TransientError(f"asked {url} for the bytes from {offset} on, it sent a range from {start}")
        return response, start, total
    except TransientError:
        response.close()
        raise


def download(
    url: str,
    partial: Path | None,
    sink: Sink,
    *,
    expected: Expected | None = None,
    bounds: Bounds | None = None,
    policy: RetryPolicy | None = None,
    progress: Progress | None = None,
    reserve: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = interrupt.wait,
    log: TextIO | None = None,
    mirrors: Sequence[str] = (),
) -> tuple[int, str]:
    """Stream ``url`` into ``partial``, passing every byte to ``sink``.

    What an earlier, interrupted run kept (see :mod:`.partial`: all the bytes,
    or a resume point and the bytes since) is fed to ``sink`` first and only
    the rest is requested, with an HTTP Range request. ``bounds`` (by
    default those of ``expected``; shared with the sink, which counts what it
    unpacks) refuses a length announced past them, and stops the transfer as
    soon as the bytes pass them (:class:`VerifyError`).
    A dropped connection, a timeout or a busy server is retried with backoff,
    resuming where the bytes stopped. Returns ``(size, sha256)`` once the byte
    count matches what the server announced and what ``expected`` says.
    ``reserve(n)`` is called before the body is read with the number of bytes
    still to come, when the server says; it raises to refuse them. Retries
    are reported to ``log`` (standard error by default); ``sleep`` waits
    before each (it raises :class:`Interrupted` on a stop, as every read does).

    On a failed check the partial file is deleted (its bytes are wrong) and
    :class:`FetchError` says which check failed; on running out of retries it
    is kept so the next run resumes. With ``partial`` None the bytes go to
    ``sink`` only: for a local file, where there is nothing to resume.

    When the process has a connection cap (:data:`.segments.BUDGET`) with
    room to spare, a large file is fetched in segments on several
    connections, from ``url`` and ``mirrors`` (the same file elsewhere) in
    turn; the checks cover the joined stream.
    """
    bounds = bounds or Bounds(expected)
    expected = bounds.expected
    policy = policy or RetryPolicy()
    log = log or sys.stderr
    store = NoStore(sink) if partial is None else PartialStore(partial, sink)
    segments = None
    if partial is not None and not is_local(url) and BUDGET.splits:
        sources = [source for source in (url, *mirrors) if not is_local(source)]
        segments = Segments(partial, sources, policy, log, lambda source, segment, wrote, stopped: fetch_segment(
            source, segment, wrote, stopped, policy, segments.total), chained=store.keeps_segments)  # fmt: skip
    try:
        try:
            done, total, digest = _receive(url, store, bounds, policy, progress, reserve, sleep, log, segments,
                                           failover=bool(mirrors))  # fmt: skip
        finally:
            if segments is not None:
                segments.close()
                for source, size in segments.served.items():
                    print(f"{source}: {size} bytes fetched in segments", file=log, flush=True)
            store.close()
        if problem := _failed_check(done, total, digest, expected):
            if partial is not None:
                remove_partial(partial)
            raise VerifyError(f"{url}: {problem}; the bad bytes were discarded")
    except BaseException:
        if progress is not None:
            progress.stop()
        raise
    if progress is not None:
        progress.finish(done)
    return done, digest.hexdigest()


def _failed_check(done: int, total: int | None, digest, expected: Expected) -> str | None:
    """Which check the received bytes fail; None when they pass all."""
    if total is not None and done != total:
        return f"received {done} bytes but the server announced {total}"
    if expected.exact_size is not None and done != expected.exact_size:
        return f"size check failed: received {done} bytes, the table says {expected.exact_size}"
    if expected.sha256 and digest.hexdigest() != expected.sha256.lower():
        return f"sha256 check failed: got {digest.hexdigest()}, the table says {expected.sha256}"
    return None


def is_local(url: str) -> bool:
    return url.startswith("file:")


def local_path(url: str) -> Path:
    """The file a ``file://`` URL names."""
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))


def _receive(url, store, bounds, policy, progress, reserve, sleep, log, segments=None, failover=False):
    """Replay what ``store`` kept into its sink, then append the rest from ``url``.

    With ``segments`` (see :mod:`.segments`), helpers fetch later parts of
    the file on spare connections; this connection hands over to each such
    part where it begins, so the sink still receives every byte in order.
    With ``failover`` (another source may serve), a refused connection is not retried.
    """
    done, digest = store.open()
    if progress is not None:
        progress.resumed(done)
    sink = store.sink

    def take(chunk: bytes, segment: Path | None = None) -> None:
        """The next bytes of the file, from the own connection or from ``segment``'s file."""
        nonlocal done
        bounds.check_compressed(done + len(chunk))
        store.write(chunk, segment)
        digest.update(chunk)
        sink.write(chunk)
        done += len(chunk)
        store.written(done, digest)
        if progress is not None:
            progress.update(done)

    if segments is not None:
        segments.opened(done)
    attempt = 0  # failed tries in a row
    total = None
    while True:
        began, began_at = done, time.monotonic()
        try:
            interrupt.check()
            if segments is not None and total is not None:
                done = segments.catch_up(done, take)
                if done == total:
                    return done, total, digest
            with nullcontext() if is_local(url) else BUDGET.connection():  # a local file takes no connection
                if segments is not None:
                    segments.asking()
                response, start, total = open_from(url, done, policy)
                if response is None:
                    return done, total, digest
                with response:
                    if start != done:
                        print(f"{url}: server ignored the range request; starting over", file=log, flush=True)
                        if segments is not None:
                            segments.discard()
                        digest, done, began = store.restart(), 0, 0
                        if progress is not None:
                            progress.resumed(0)
                    bounds.announce(total)
                    if segments is not None and segments.total is None:
                        segments.started(total, response.status == 206 or _takes_ranges(response.headers))
                    if progress is not None:
                        progress.total = total
                    if reserve is not None and total is not None:
                        reserve(total - done)
                    pace = _Pace(policy)
                    while True:
                        interrupt.check()
                        if segments is not None and segments.hands_over(done):
                            break  # a helper fetched what follows
                        chunk = _read(response)
                        if chunk is None:  # a tick without bytes
                            pace.update(0)
                            continue
                        if not chunk:
                            break
                        if segments is not None:
                            chunk = chunk[: segments.limit(done, len(chunk))]
                            segments.arrived(len(chunk))  # measures the wire; lends spare slots when that pays
                        take(chunk)
                        pace.update(len(chunk))
            if segments is not None and segments.hands_over(done):
                continue
            if total is not None and done < total:
                raise TransientError(f"connection closed after {done} of {total} bytes")
            return done, total, digest
        except TransientError as error:
            store.flush()
            if failover and isinstance(error, Refused):
                raise FetchError(str(error)) from None
            if policy.is_healthy(done - began, time.monotonic() - began_at):
                attempt = 0
            attempt += 1
            if attempt > policy.retries:
                raise FetchError(f"{url}: gave up after {policy.retries} retries: {error}") from None
            delay = policy.wait(attempt, error.retry_after)
            print(f"{url}: {error}; retry {attempt} of {policy.retries} in {delay:.1f} s", file=log, flush=True)
            sleep(delay)
        except Interrupted:
            store.flush()  # what came so far is what the next run resumes from
            raise


def _takes_ranges(headers) -> bool:
    return (headers.get("Accept-Ranges") or "").strip().lower() == "bytes"


def fetch_segment(url: str, segment, wrote, stopped, policy: RetryPolicy, total: int) -> None:
    """Fetch the rest of ``segment`` (see :mod:`.segments`) from ``url`` into its file, retrying with backoff.

    ``wrote(n)`` is told of every ``n`` bytes written; ``stopped()`` ends it
    early. :class:`FetchError` when ``url`` cannot serve it: it ignores
    Range, its file has another length than ``total``, or it fails too often.
    """
    attempt = 0
    while not segment.complete:
        began, began_at = segment.fetched, time.monotonic()
        try:
            interrupt.check()
            if stopped():
                return
            offset = segment.start + segment.fetched
            response, start, size = open_from(url, offset, policy, end=segment.end)
            if response is None:
                raise FetchError(f"{url} says the file ends at byte {offset}")
            with response:
                if start != offset:
                    raise FetchError(f"{url} ignored the range request for a segment")
                if size != total:
                    raise FetchError(f"{url} serves {size} bytes, the file being fetched has {total}")
                pace = _Pace(policy)
                with open_file(segment.path, "ab", buffering=0) as out:
                    while not segment.complete:
                        interrupt.check()
                        if stopped():
                            return
                        chunk = _read(response)
                        if chunk is None:
                            pace.update(0)
                            continue
                        if not chunk:
                            break
                        chunk = chunk[: segment.end - segment.start - segment.fetched]
                        out.write(chunk)
                        wrote(len(chunk))
                        pace.update(len(chunk))
            if not segment.complete:
                raise TransientError(f"connection closed at byte {segment.start + segment.fetched} of a segment")
        except TransientError as error:
            if isinstance(error, Refused):
                raise FetchError(str(error)) from None
            if policy.is_healthy(segment.fetched - began, time.monotonic() - began_at):
                attempt = 0
            attempt += 1
            if attempt > policy.retries:
                raise FetchError(f"gave up after {policy.retries} retries: {error}") from None
            interrupt.wait(policy.wait(attempt, error.retry_after))


def _read(response) -> bytes | None:
    """The next chunk of the body: empty at its end, None when nothing came within a tick.

    A network fault becomes :class:`TransientError`.
    """
    try:
        # read1 hands over what has arrived instead of waiting for a full chunk,
        # so bytes received before a stall are kept.
        return response.read1(CHUNK_SIZE)
    except TimeoutError:
        # A timed-out receive loses no bytes, but the socket's reader refuses
        # every later read once one timed out; these time out on purpose.
        raw = getattr(getattr(response, "fp", None), "raw", None)
        if hasattr(raw, "_timeout_occurred"):
            raw._timeout_occurred = False
        return None
    except (ConnectionError, http.client.HTTPException) as error:
        raise TransientError(f"connection broke: {error!r}") from None
