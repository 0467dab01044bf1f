"""A small HTTP server for a folder, on 127.0.0.1: Range requests, a request log,
an optional per-connection rate cap, and faults injected on demand.

The demo, the tests and the benchmark point the build at it as ``base_url``.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Fault:
    """Misbehaviour for one path, used up one request at a time.

    ``statuses`` are answered (one per request) before the file is served,
    with ``retry_after`` as seconds or ``retry_after_date`` (seconds from
    now) as an HTTP date; ``html_page`` answers 200 with an HTML error page,
    once; ``content_encoding`` sends the whole file gzipped again (or the
    page, with ``html_page``), labelled with that Content-Encoding (an empty
    string: unlabelled, as a proxy that drops the header), once;
    ``wrong_range`` answers a Range request with a 206 starting at that
    offset instead, once; ``drop_after`` closes the connection after that
    many body bytes, once, ``drop_every`` every time (with ``drop_from``, only in an answer that starts
    at or past that byte: a later segment); ``ignore_range`` serves the whole file whatever
    Range asks for; ``stall`` sleeps that long mid-body, once; ``drip``
    sends the body one byte every that many seconds; ``corrupt`` flips the
    byte at that offset of every response; ``header_drip`` sends headers
    that never end, one byte every that many seconds, to every request
    (with ``drop_from``, only to one whose range starts at or past that
    byte: a segment); ``redirect`` answers 302 to that URL, every time.
    """

    statuses: list[int] = field(default_factory=list)
    retry_after: int | None = None
    retry_after_date: float | None = None
    html_page: bool = False
    content_encoding: str | None = None
    wrong_range: int | None = None
    drop_after: int | None = None
    drop_every: int | None = None
    drop_from: int | None = None
    ignore_range: bool = False
    stall: float | None = None
    drip: float | None = None
    corrupt: int | None = None
    header_drip: float | None = None
    redirect: str | None = None

    def encode(self, body: bytes, headers: dict[str, str]) -> bytes:
        """``body`` gzipped with its Content-Encoding label when ``content_encoding`` asks (using it up)."""
        if self.content_encoding is None:
            return body
        if self.content_encoding:
            headers["Content-Encoding"] = self.content_encoding
        self.content_encoding = None
        return gzip.compress(body, mtime=0)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    status: int | None = None  # None until answered
    sent: int = 0  # body bytes written to the socket
    time: float = field(default_factory=time.monotonic)  # when the request arrived
    ended: float | None = None  # when its answer was over (time.monotonic(), as ``time``)


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, root: Path, rate: float | None = None, latency: float = 0.0, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = Path(root).resolve()
        self.rate = rate
        self.latency = latency
        self.faults: dict[str, Fault] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self.active = 0  # connections being answered now
        self.peak = 0  # the most at once

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def log_request(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def gets(self) -> list[Request]:
        """The GET requests: what was downloaded (a build also asks HEAD once, to see the server is there)."""
        return [r for r in self.requests if r.method == "GET"]

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


class _Handler(BaseHTTPRequestHandler):
    server: MirrorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: the server keeps its own log
        pass

    def _start(self, status: int, headers: dict[str, str], length: int) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(length), "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()

    def _answer(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self._start(status, headers, len(body))
        if self.command != "HEAD":
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client saw enough
                self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        request = Request(self.command, unquote(urlsplit(self.path).path).lstrip("/"), self.headers.get("Range"))
        self.server.log_request(request)  # at arrival, so a stalled answer is logged in order
        with self.server._lock:
            self.server.active += 1
            self.server.peak = max(self.server.peak, self.server.active)
        try:
            request.status = self._serve(request, request.path, request.range)
        finally:
            request.ended = time.monotonic()
            with self.server._lock:
                self.server.active -= 1
        self.close_connection = True

    def _serve(self, request: Request, path: str, requested: str | None) -> int:
        if self.server.latency:
            time.sleep(self.server.latency)
        fault = self.server.faults.get(path, Fault())
        if fault.header_drip and (fault.drop_from is None or _range_start(requested) >= fault.drop_from):
            self._drip_headers(fault.header_drip)
            return HTTPStatus.OK
        if fault.redirect is not None:
            self._answer(HTTPStatus.FOUND, {"Location": fault.redirect})
            return HTTPStatus.FOUND
        if fault.statuses:
            status = fault.statuses.pop(0)
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.retry_after_date is not None:
                headers["Retry-After"] = formatdate(time.time() + fault.retry_after_date, usegmt=True)
            self._answer(status, headers, f"{status} injected\n".encode())
            return status
        if fault.html_page:
            fault.html_page = False
            headers = {"Content-Type": "text/html; charset=utf-8"}
            page = b"<html><head><title>Service Unavailable</title></head><body>Try again later.</body></html>\n"
            self._answer(HTTPStatus.OK, headers, fault.encode(page, headers))
            return HTTPStatus.OK
        file = (self.server.root / path).resolve()
        if not file.is_relative_to(self.server.root) or not file.is_file():
            self._answer(HTTPStatus.NOT_FOUND, {}, b"not found\n")
            return HTTPStatus.NOT_FOUND
        if fault.content_encoding is not None:
            headers = {"Content-Type": "application/octet-stream"}
            self._answer(HTTPStatus.OK, headers, fault.encode(file.read_bytes(), headers))
            return HTTPStatus.OK
        size = file.stat().st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", requested or "")
        if match and not fault.ignore_range:
            start = int(match.group(1))
            if fault.wrong_range is not None:
                start, fault.wrong_range = fault.wrong_range, None
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size:
                self._answer(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"})
                return HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
            status = HTTPStatus.PARTIAL_CONTENT
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "Last-Modified": formatdate(file.stat().st_mtime, usegmt=True),
        }
        if status == HTTPStatus.PARTIAL_CONTENT:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        self._start(status, headers, length)
        if self.command == "HEAD":
            return status
        self._send_body(file, start, length, fault, request)
        return status

    def _drip_headers(self, interval: float) -> None:
        """A status line, then a header that never ends, a byte every ``interval`` seconds, until the client leaves."""
        head = b"HTTP/1.1 200 OK\r\nX-Drip: "
        sent = 0
        while not self._client_gone(interval):
            try:
                self.wfile.write(head[sent : sent + 1] or b"a")
                self.wfile.flush()
            except OSError:
                return
            sent += 1

    def _client_gone(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds (the cap's pace), ending early, with True, when the client closes the
        connection: so ``active`` and ``peak`` count what the client holds open, not what it left."""
        readable, _, _ = select.select([self.connection], [], [], wait)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""  # a client sends nothing more, but its close
        except OSError:
            return True

    def _send_body(self, file: Path, start: int, length: int, fault: Fault, request: Request) -> None:
        chunk_size = 1 if fault.drip else _chunk_size(self.server.rate, fault)
        sent = 0
        began = time.monotonic()
        with open(file, "rb") as handle:
            handle.seek(start)
            while sent < length:
                chunk = bytearray(handle.read(min(chunk_size, length - sent)))
                if fault.corrupt is not None and start + sent <= fault.corrupt < start + sent + len(chunk):
                    chunk[fault.corrupt - start - sent] ^= 0xFF
                drop = fault.drop_after if fault.drop_after is not None else fault.drop_every
                if fault.drop_from is not None and start < fault.drop_from:
                    drop = None
                if drop is not None and sent + len(chunk) > drop:
                    self.wfile.write(chunk[: drop - sent])
                    self.wfile.flush()
                    fault.drop_after = None
                    return  # the connection closes short of Content-Length
                if fault.stall is not None and sent:
                    stall, fault.stall = fault.stall, None
                    time.sleep(stall)
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(chunk)
                request.sent = sent
                if fault.drip:
                    time.sleep(fault.drip)
                if self.server.rate and sent < length:
                    ahead = sent / self.server.rate - (time.monotonic() - began)
                    if ahead > 0 and self._client_gone(ahead):
                        return


def _range_start(requested: str | None) -> int:
    match = re.fullmatch(r"bytes=(\d+)-\d*", requested or "")
    return int(match.group(1)) if match else 0


def _chunk_size(rate: float | None, fault: Fault) -> int:
    """Bytes written at a time: 64 KB under a fault or a slow cap (they act at that grain), else 50 ms of
    the cap up to 1 MB, so that serving costs few system calls (the server shares the benchmark's cores)."""
    if fault != Fault():
        return 64 << 10
    return min(1 << 20, max(64 << 10, int(rate / 20))) if rate else 1 << 20


@contextmanager
def running(server: MirrorServer) -> Iterator[MirrorServer]:
    """``server`` answering in a thread of its own for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def serve(root: Path, rate: float | None = None, latency: float = 0.0):
    """Serve ``root`` on 127.0.0.1 (a free port) for the duration of the block.

    ``rate`` caps each connection's bytes per second; ``latency`` delays each answer.
    """
    return running(MirrorServer(root, rate=rate, latency=latency))


def serve_until_stopped(server: MirrorServer, banner: str) -> None:
    """For a command: print ``banner`` and answer until Ctrl-C or SIGTERM."""
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    print(f"{banner} at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mirage_reffiles.server",
        description="Serve FOLDER over HTTP on 127.0.0.1, as the reference-file server serves its files (Range "
        "requests, Last-Modified): a synthetic mirror from `python -m mirage_reffiles.mirror`, or a tree built "
        "with keep_archives=true, whose archives/ folder is a copy of the server. Point base_url at the address "
        "it prints. Stops on Ctrl-C.",
    )
    parser.add_argument("folder", type=Path, help="the folder to serve")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--rate", type=float, help="cap each connection at this many bytes per second")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    serve_until_stopped(MirrorServer(args.folder, rate=args.rate, port=args.port), f"Serving {args.folder.resolve()}")


if __name__ == "__main__":
    main()
