"""One clock per request: connecting and waiting for the answer end by a deadline, and at once on a stop.

``urllib`` blocks while it connects and while the response headers arrive: a
server that drips its headers a byte a second never trips a socket timeout,
and no stop reaches a thread blocked in a read. Every request of this
package goes through :class:`Clock` instead (as curl's ``--max-time`` covers
a whole transfer): it connects in ticks of :data:`TICK`, and a watcher
thread shuts down the sockets of a request whose deadline passed, or of
every request once a stop was asked for (:mod:`.interrupt`), which ends the
blocked read at once. What the request was doing then ends in
:class:`TransientError` (the deadline: retried, then the next source) or
:class:`Interrupted`. A download's body is read in ticks under its own
stall rules (:mod:`.http`); short answers (a probe, a CRDS call) keep the
clock until their body is read.

Only ``http``, ``https`` and ``file`` URLs are opened, and redirects are
followed to ``http`` and ``https`` only: a source that sends elsewhere is
refused (:class:`FetchError`), so the next source is tried.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http.client
import os
import select
import socket
import threading
import time
import urllib.parse
import urllib.request

from mirage_reffiles.errors import FetchError, Interrupted, TransientError
from mirage_reffiles.transfer import interrupt

#: The longest a wait goes unchecked, in seconds: a stop or a deadline is noticed within it.
TICK = 0.5
#: Schemes a request may use, and a redirect may lead to (``file`` only as a source's own URL).
SCHEMES = ("http", "https", "file")
REDIRECT_SCHEMES = ("http", "https")
_IN_PROGRESS = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)


class Clock:
    """The deadline of one request, ``seconds`` from now; ``what`` names the wait in its error.

    Used as a context manager around opening (and reading) a request with
    :meth:`open`: a block that ends after the clock rang, with an error or
    not, raises :class:`Interrupted` (a stop) or :class:`TransientError` (the deadline).
    """

    def __init__(self, seconds: float, what: str = "the answer"):
        self.seconds = seconds
        self.what = what
        self.deadline = time.monotonic() + seconds
        self.rang = False
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> Clock:
        _WATCHER.arm(self)
        return self

    def __exit__(self, kind, error, trace) -> None:
        _WATCHER.disarm(self)
        # Once rung, whatever came back (an error, or headers cut short) is not the answer.
        if self.rang and (error is None or (isinstance(error, Exception) and not isinstance(error, Interrupted))):
            self.check()

    def check(self) -> None:
        """Raise :class:`Interrupted` on a stop, :class:`TransientError` past the deadline."""
        interrupt.check()
        if time.monotonic() >= self.deadline:
            raise TransientError(f"no {self.what} within {self.seconds:g} s")

    def ring(self) -> None:
        """End the request now: every read or handshake on its sockets returns at once."""
        self.rang = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def watch(self, sock: socket.socket) -> None:
        self._sockets.append(sock)
        if self.rang:
            self.ring()

    def open(self, request: urllib.request.Request, connect_timeout: float):
        """``request`` opened under this clock (which must be entered); each connection attempt
        also ends after ``connect_timeout`` seconds. Errors are urllib's."""
        scheme = urllib.parse.urlsplit(request.full_url).scheme.lower()
        if scheme not in SCHEMES:
            raise FetchError(f"{request.full_url}: {scheme}:// is not served here (only {', '.join(SCHEMES)})")
        _CURRENT.clock = self
        try:
            return _opener().open(request, timeout=connect_timeout)
        finally:
            _CURRENT.clock = None

    def connect(self, address, timeout=None, source_address=None) -> socket.socket:
        """:func:`socket.create_connection`, waiting in ticks so that a stop or the deadline ends the wait."""
        limit = min(self.deadline, time.monotonic() + (timeout if isinstance(timeout, int | float) else self.seconds))
        failure: OSError | None = None
        for family, kind, proto, _, target in socket.getaddrinfo(*address, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                if source_address:
                    sock.bind(source_address)
                sock.setblocking(False)
                code = sock.connect_ex(target)
                while code in _IN_PROGRESS:
                    self.check()
                    if time.monotonic() >= limit:
                        raise TimeoutError(errno.ETIMEDOUT, "timed out while connecting")
                    if select.select([], [sock], [], TICK)[1]:
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
                # Blocking from here on: the watcher ends a read that outlives the clock.
                sock.settimeout(max(TICK, self.deadline - time.monotonic()))
                self.watch(sock)
                return sock
            except OSError as error:
                sock.close()
                failure = error
            except BaseException:
                sock.close()
                raise
        raise failure or OSError(f"no address for {address[0]}")


class _Watcher:
    """One thread that rings the armed clocks past their deadline, or all of them on a stop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: set[Clock] = set()
        self._thread: threading.Thread | None = None

    def arm(self, clock: Clock) -> None:
        with self._cond:
            self._armed.add(clock)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="mirage-reffiles clock", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, clock: Clock) -> None:
        with self._cond:
            self._armed.discard(clock)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._armed:
                    self._cond.wait()
                now = time.monotonic()
                due = [clock for clock in self._armed if interrupt.requested() or now >= clock.deadline]
                self._armed.difference_update(due)
                wait = min([TICK, *(clock.deadline - now for clock in self._armed)])
            for clock in due:
                clock.ring()
            if not due:
                with self._cond:
                    self._cond.wait(max(0.0, wait))


_WATCHER = _Watcher()
_CURRENT = threading.local()  # the clock of the request this thread is opening


class _Clocked:
    """A connection that connects under the clock of its thread's request and lets it watch its socket."""

    def connect(self):
        clock = _CURRENT.clock
        self._create_connection = clock.connect
        super().connect()
        clock.watch(self.sock)  # the socket reads go through: TLS-wrapped for https


class _HTTPConnection(_Clocked, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Clocked, http.client.HTTPSConnection):
    pass


_CONNECTIONS = {http.client.HTTPConnection: _HTTPConnection, http.client.HTTPSConnection: _HTTPSConnection}


class _ClockedOpen:
    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_CONNECTIONS[http_class], req, **kwargs)


class _HTTPHandler(_ClockedOpen, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_ClockedOpen, urllib.request.HTTPSHandler):
    pass


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https only (urllib also follows ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in REDIRECT_SCHEMES:
            fp.close()
            raise FetchError(f"{req.full_url} redirects to {newurl}, which is not http(s); not followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    # Built on first use, as urllib's own: the proxy variables are read then.
    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler, _Redirects)
