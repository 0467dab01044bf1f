"""One question to the server before a build schedules its downloads: can it be reached at all?

A refused connection, an unknown host or an untrusted certificate will not
get better by retrying each file for minutes; they end the run at once with
the fix. Any HTTP answer, even an error status, means the server is there.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

from mirage_reffiles.errors import FetchError, Interrupted, ServerUnreachable, TransientError
from mirage_reffiles.transfer.clock import Clock

#: Seconds to wait for the server's answer (connecting, then its headers) before calling it unreachable.
PROBE_TIMEOUT = 10.0


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise :class:`ServerUnreachable` unless ``url``'s server answers a HEAD request.

    Local URLs (``file://``) are not probed.
    """
    if not url.startswith(("http://", "https://")):
        return
    host = urllib.parse.urlsplit(url).netloc
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "mirage-reffiles"})
    try:
        with Clock(timeout) as clock:
            clock.open(request, timeout).close()
    except Interrupted:
        raise
    except urllib.error.HTTPError:
        return  # it answered
    except (FetchError, urllib.error.URLError, OSError, http.client.HTTPException) as error:
        # TransientError is the clock's: no answer in time, connected or not.
        reason = TimeoutError() if isinstance(error, TransientError) else getattr(error, "reason", error)
        raise ServerUnreachable(explain(host, reason, timeout)) from None


def explain(host: str, reason: object, timeout: float = PROBE_TIMEOUT) -> str:
    """What went wrong reaching ``host``, and what to do about it."""
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            f"the certificate of {host} is not trusted ({reason.verify_message}). If your site uses its own "
            "certificate authority, point SSL_CERT_FILE at its bundle: export SSL_CERT_FILE=/path/to/ca-bundle.pem"
        )
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name {host!r} ({reason.strerror}); check base_url and your network or proxy"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection; check base_url, or whether the server is up"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"{host} did not answer within {timeout:g} s; check base_url and your network or proxy"
    return f"cannot reach {host}: {reason}; check base_url and your network or proxy"


def probe_any(urls: list[str], timeout: float = PROBE_TIMEOUT) -> None:
    """Raise :class:`ServerUnreachable` (the first source's reason) unless one of ``urls`` answers."""
    failures = []
    for url in urls:
        try:
            return probe(url, timeout)
        except ServerUnreachable as error:
            failures.append(error)
    raise failures[0]
