"""Resumable, verified byte transfer from a URL into a partial file.

``urllib.request`` does the HTTP: it follows redirects (the server's URLs
are redirects), honours the usual proxy variables and speaks ``file://``.
"""

from __future__ import annotations

import http.client
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

from .errors import FetchError, VerifyError
from .partial import NoStore, PartialStore, remove_partial
from .progress import Progress

CHUNK_SIZE = 1 << 20
USER_AGENT = "mirage-reffiles"
#: Statuses worth another try: the server is busy or failing for now.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class TransientError(FetchError):
    """A failure worth retrying (dropped connection, timeout, 5xx, 429)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Sink(Protocol):
    """Receives every byte of the download, in order, exactly once per attempt."""

    def write(self, chunk: bytes) -> None: ...

    def reset(self) -> None:
        """Forget everything written (the server sent the file from the start)."""


@dataclass
class RetryPolicy:
    """How often and how patiently to try again.

    The wait before try ``n`` is ``backoff * 2 ** (n - 1)`` seconds, capped at
    ``max_backoff``; a server's Retry-After wins when it asks for longer.
    """

    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    connect_timeout: float = 30.0
    read_timeout: float = 60.0

    def wait(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay


@dataclass
class Expected:
    """What the table knows of a file: checked before it takes its final name."""

    size: int | None = None
    sha256: str | None = None


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


def _content_range(value: str | None) -> tuple[int, int | None]:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    if not match:
        raise TransientError(f"unreadable Content-Range {value!r}")
    total = None if match.group(2) == "*" else int(match.group(2))
    return int(match.group(1)), total


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def open_from(url: str, offset: int, policy: RetryPolicy):
    """Open ``url`` at byte ``offset``.

    Returns ``(response, start, total)``: ``start`` is where the bytes that
    follow begin (0 when the server ignored the Range request) and ``total``
    the full length when the server said it; ``response`` is None when the
    file is already complete (a 416 answer to a request past its end).
    """
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=policy.connect_timeout)
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
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, FileNotFoundError):
            raise FetchError(f"{url} does not exist") from None
        raise TransientError(f"cannot reach {url}: {reason}") from None
    # The connect timeout governs the handshake; reads get their own limit.
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(policy.read_timeout)
    status = getattr(response, "status", None)
    if status == 206:
        start, total = _content_range(response.headers.get("Content-Range"))
        return response, start, total
    length = response.headers.get("Content-Length")
    total = int(length) if length is not None and length.isdigit() else None
    if status is None:  # file:// ignores Range: skip ahead ourselves
        response.seek(offset)
        return response, offset, total
    return response, 0, total


def download(
    url: str,
    partial: Path | None,
    sink: Sink,
    *,
    expected: Expected | None = None,
    policy: RetryPolicy | None = None,
    progress: Progress | None = None,
    reserve: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: TextIO | None = None,
) -> tuple[int, str]:
    """Stream ``url`` into ``partial``, passing every byte to ``sink``.

    What an earlier, interrupted run kept (see :mod:`.partial`: all the bytes,
    or a resume point and the bytes since) is fed to ``sink`` first and only
    the rest is requested, with an HTTP Range request.
    A dropped connection, a timeout or a busy server is retried with backoff,
    resuming where the bytes stopped. Returns ``(size, sha256)`` once the byte
    count matches what the server announced and what ``expected`` says.
    ``reserve(n)`` is called before the body is read with the number of bytes
    still to come, when the server says; it raises to refuse them. Retries
    are reported to ``log`` (standard error by default).

    On a failed check the partial file is deleted (its bytes are wrong) and
    :class:`FetchError` says which check failed; on running out of retries it
    is kept so the next run resumes. With ``partial`` None the bytes go to
    ``sink`` only: for a local file, where there is nothing to resume.
    """
    expected = expected or Expected()
    policy = policy or RetryPolicy()
    store = NoStore(sink) if partial is None else PartialStore(partial, sink)
    try:
        done, total, digest = _receive(url, store, policy, progress, reserve, sleep, log or sys.stderr)
    finally:
        store.close()
    problem = None
    if total is not None and done != total:
        problem = f"received {done} bytes but the server announced {total}"
    elif expected.size is not None and done != expected.size:
        problem = f"size check failed: received {done} bytes, the table says {expected.size}"
    elif expected.sha256 and digest.hexdigest() != expected.sha256.lower():
        problem = f"sha256 check failed: got {digest.hexdigest()}, the table says {expected.sha256}"
    if problem:
        if partial is not None:
            remove_partial(partial)
        raise VerifyError(f"{url}: {problem}; the bad bytes were discarded")
    if progress is not None:
        progress.finish(done)
    return done, digest.hexdigest()


def is_local(url: str) -> bool:
    return url.startswith("file:")


def local_path(url: str) -> Path:
    """The file a ``file://`` URL names."""
    return Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))


def _receive(url, store, policy, progress, reserve, sleep, log):
    """Replay what ``store`` kept into its sink, then append the rest from ``url``."""
    done, digest = store.open()
    sink = store.sink
    attempt = 0
    while True:
        try:
            response, start, total = open_from(url, done, policy)
            if response is None:
                return done, total, digest
            with response:
                if start != done:
                    print(f"{url}: server ignored the range request; starting over", file=log, flush=True)
                    digest, done = store.restart(), 0
                if progress is not None:
                    progress.total = total
                if reserve is not None and total is not None:
                    reserve(total - done)
                while chunk := _read(response):
                    store.write(chunk)
                    digest.update(chunk)
                    sink.write(chunk)
                    done += len(chunk)
                    store.written(done, digest)
                    if progress is not None:
                        progress.update(done)
            if total is not None and done < total:
                raise TransientError(f"connection closed after {done} of {total} bytes")
            return done, total, digest
        except TransientError as error:
            store.flush()
            attempt += 1
            if attempt > policy.retries:
                raise FetchError(f"{url}: gave up after {policy.retries} retries: {error}") from None
            delay = policy.wait(attempt, error.retry_after)
            print(f"{url}: {error}; retry {attempt} of {policy.retries} in {delay:.1f} s", file=log, flush=True)
            sleep(delay)


def _read(response) -> bytes:
    """The next chunk of the body; a network fault becomes :class:`TransientError`."""
    try:
        # read1 hands over what has arrived instead of waiting for a full chunk,
        # so bytes received before a stall are kept.
        return response.read1(CHUNK_SIZE)
    except TimeoutError:
        raise TransientError("read timed out (no bytes for too long)") from None
    except (ConnectionError, http.client.HTTPException) as error:
        raise TransientError(f"connection broke: {error!r}") from None
