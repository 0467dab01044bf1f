"""Segmented downloads: the spare connections of the download cap fetch later parts of a running file.

One connection per file is fast while as many files as connections run at
once, not in a build's tail (one 6 GB dark on one connection). Each HTTP
connection of this process takes a slot of :data:`BUDGET`, sized from the
``downloads`` cap, so a server never sees more connections from one run
than the cap, whatever ``--cores`` or ``--jobs`` say. A download whose
remaining bytes exceed two segments lends the spare slots to helper
threads: each fetches a later byte range (a *segment*, :data:`SEGMENT_SIZE`
bytes unless :meth:`Budget.configure` sets another size) into
``<partial>.seg<start>-<end>``, beside the partial download.
The download's own connection keeps feeding the unpacker in order; where a
segment begins it reads that segment's file (while it grows, if need be)
and goes on. So the unpacker, the resume points and every digest see the
joined stream exactly as from one connection. The file read joins the
chain of kept bytes as it is (see :mod:`.partial`), to be deleted once a
resume point is past it; a store without resume points copies its bytes
and the file is deleted at once.

Segments are only fetched up to :data:`AHEAD` segments' bytes past
where the unpacker stands, which bounds their disk use per file. A segment
file holds the first bytes of its range: after a drop or a kill it resumes
from its own size. A server that ignores Range for a helper, or whose file
size differs, is not used for segments again during that download; a
helper that gives up leaves its segment to the download's own connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mirage_reffiles.errors import FetchError, Interrupted
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.partial import pieces, segment_path
from mirage_reffiles.tree.door import open_file

#: Bytes of one segment: a request per 32 MB costs one round trip (about 1.6 s of transfer at 20 MB/s each).
SEGMENT_SIZE = 32 << 20
#: Files with no more than this many segments' bytes left are not split (64 MB: 3 s on one 20 MB/s connection).
SPLIT_ABOVE = 2
#: The most segments' bytes fetched ahead of the unpacker, per file: their disk use (256 MB).
AHEAD = 8
#: Near the unpacker and near the end of a file, segments shrink down to this fraction of a segment (4 MB).
TAIL_DIVISOR = 8
#: How long a read or a wait may block before a stop is noticed, in seconds.
TICK = 0.5


class Budget:
    """The process-wide count of open connections, capped at ``cap`` (no cap until :meth:`configure`).

    A download's own connection waits for a slot; helpers take only a free
    one, and leave after their segment when a download waits.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.cap: int | None = None
        self.segment_size = SEGMENT_SIZE
        self.used = 0
        self.waiting = 0
        self.peak = 0

    def configure(self, cap: int | None, segment_size: int = SEGMENT_SIZE) -> None:
        """At most ``cap`` connections at once (None: no cap, no segments), in segments of ``segment_size`` bytes
        (0: no segments)."""
        with self._cond:
            self.cap = cap
            self.segment_size = segment_size
            self._cond.notify_all()

    @property
    def splits(self) -> bool:
        """Whether a download may be split: a cap with room for helpers, and a segment size."""
        return (self.cap or 0) > 1 and self.segment_size > 0

    def _take(self) -> None:
        self.used += 1
        self.peak = max(self.peak, self.used)

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Hold a slot for one connection of a download (waiting for one; a stop ends the wait)."""
        with self._cond:
            self.waiting += 1
            try:
                while self.cap is not None and self.used >= self.cap:
                    interrupt.check()
                    self._cond.wait(TICK)
            finally:
                self.waiting -= 1
            self._take()
        try:
            yield
        finally:
            self.release()

    def try_acquire(self) -> bool:
        """Take a free slot for a helper, unless there is no cap, none is free or a download waits."""
        with self._cond:
            if self.cap is None or self.used >= self.cap or self.waiting:
                return False
            self._take()
            return True

    def release(self) -> None:
        with self._cond:
            self.used -= 1
            self._cond.notify_all()

    def contended(self) -> bool:
        return self.waiting > 0


#: Every connection this process opens to download.
BUDGET = Budget()


@dataclass
class Segment:
    """Bytes ``start`` to ``end`` of the download, kept in ``path`` (its first ``fetched`` bytes)."""

    start: int
    end: int
    path: Path
    fetched: int = 0
    helper: bool = False  # a helper is fetching it now

    @property
    def complete(self) -> bool:
        return self.fetched >= self.end - self.start


class Segments:
    """The segments of one download, its helpers, and where its own connection may read up to."""

    def __init__(
        self, partial: Path, sources: list[str], policy, log: TextIO, fetch_range: Callable, chained: bool = False
    ):
        self.partial = partial
        self.chained = chained  # a segment read joins the kept bytes as it is (PartialStore.keeps_segments)
        self.sources = list(sources)  # helpers take them in turn
        self.policy = policy
        self.log = log
        self.fetch_range = fetch_range  # (url, segment, write, stopped) -> None; see http.fetch_segment
        self._cond = threading.Condition()
        self._by_start: dict[int, Segment] = {}
        self._threads: list[threading.Thread] = []
        self._turn = 0
        self.total: int | None = None
        self.position = 0  # where the unpacker stands
        self.stream_end = 0  # the download's own connection reads up to here
        self.splittable = False
        self.stopping = False
        self.served: dict[str, int] = {}  # bytes fetched by helpers, per source

    # The download's own side.

    def opened(self, done: int) -> None:
        """After the kept bytes were replayed up to ``done``: take up the segment files kept beside them."""
        self.position = done
        for piece in pieces(self.partial):
            if piece.end is None or (self.chained and piece.start < done):
                continue  # the own connection's bytes, or a segment on the chain of kept bytes
            if piece.end <= done or piece.size > piece.end - piece.start:
                piece.path.unlink(missing_ok=True)  # read already, or not ours
                continue
            self._by_start[piece.start] = Segment(piece.start, piece.end, piece.path, fetched=piece.size)

    def started(self, total: int | None, ranges: bool) -> None:
        """The first answer came: the file's length, and whether the server takes Range requests."""
        with self._cond:
            if total is None or any(segment.end > total for segment in self._by_start.values()):
                self._drop_all()  # of another length: not this file's bytes
            self.total = total
            self.splittable = ranges and total is not None and len(self.sources) > 0
            self._own_from(self.position)

    def _own_from(self, done: int) -> None:
        """The own connection reads on from ``done``, up to the next segment or one segment's length."""
        if self.stream_end > done:
            return
        if not self.splittable:
            self.stream_end = self.total or 0
            return
        later = [start for start in self._by_start if start > done]
        self.stream_end = min([done + self._length(done), self.total, *later])

    def limit(self, done: int, size: int) -> int:
        """How many of ``size`` bytes arriving at ``done`` on the own connection to take (fewer: a segment begins)."""
        with self._cond:
            self.position = done
            if self.total is None:
                return size
            while done + size > self.stream_end and self.stream_end < self.total:
                if not self._absorb(self.stream_end):
                    return self.stream_end - done
                later = [start for start in self._by_start if start > self.stream_end]
                self.stream_end = min([self.stream_end + self._length(self.stream_end), self.total, *later])
            return size

    def _absorb(self, start: int) -> bool:
        """Whether the own connection may read on at ``start`` (under the lock): no segment begins
        there, or one that a helper left empty (it gave up), which is dropped."""
        segment = self._by_start.get(start)
        if segment is None:
            return True
        if segment.helper or segment.fetched:
            return False
        del self._by_start[start]
        segment.path.unlink(missing_ok=True)
        return True

    def hands_over(self, done: int) -> bool:
        """Whether a segment holds the byte at ``done``: the own connection stops there."""
        with self._cond:
            if done == self.stream_end and self._absorb(done):
                return False
            return any(s.start <= done < s.end for s in self._by_start.values())

    def catch_up(self, done: int, take: Callable[[bytes, Path], None]) -> int:
        """Feed ``take(block, file)`` the segments from ``done`` on, in order; returns where they end.

        A segment no helper is fetching is read as far as it goes; the own
        connection fetches the rest of it.
        """
        while True:
            with self._cond:
                segment = next((s for s in self._by_start.values() if s.start <= done < s.end), None)
            if segment is None:
                break
            with open_file(segment.path, "rb") as handle:
                handle.seek(done - segment.start)
                while done < segment.end:
                    self.spawn()  # the window moved on: room for more segments
                    with self._cond:
                        self.position = done
                        available = segment.start + segment.fetched - done
                        if available <= 0:
                            if not segment.helper:  # nobody fetches the rest: the own connection will
                                del self._by_start[segment.start]
                                self.stream_end = segment.end
                                self._read(segment, done)
                                return done
                            self._cond.wait(TICK)
                            interrupt.check()
                            continue
                    block = handle.read(min(available, 1 << 20))
                    take(block, segment.path)
                    done += len(block)
            with self._cond:
                del self._by_start[segment.start]
            self._read(segment, done)
        with self._cond:
            self.position = done
            self._own_from(done)
        return done

    def _read(self, segment: Segment, done: int) -> None:
        """The own connection has read ``segment`` up to ``done``: its file goes, unless on the chain of kept bytes."""
        if not self.chained or done == segment.start:
            segment.path.unlink(missing_ok=True)

    def spawn(self) -> None:
        """Lend the free slots of the cap to helpers, while enough of the file is left."""
        while not self.stopping and self.splittable and BUDGET.try_acquire():
            with self._cond:
                segment = self._claim()
                if segment is not None:
                    source = self.sources[self._turn % len(self.sources)]
                    self._turn += 1
            if segment is None:
                BUDGET.release()
                return
            thread = threading.Thread(target=self._help, args=(segment, source), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _length(self, start: int) -> int:
        """How many bytes from ``start`` on one connection takes: a segment, or less (down to an eighth of one)
        where it matters that they arrive soon. Near the start of a file (a quarter of the offset), so that the
        unpacker has bytes to unpack in order while the connections ramp up; and near its end, where what is
        left is shared among the connections, so that they finish together instead of one or two fetching
        the last full segments alone."""
        size = BUDGET.segment_size
        share = -(-max(0, (self.total or 0) - start) // (BUDGET.cap or 1))
        return min(size, max(size // TAIL_DIVISOR, min(start // 4, share)))

    def _claim(self) -> Segment | None:
        """The next segment for a helper (under the lock): one left unfinished, else a new one past the others."""
        size = BUDGET.segment_size
        if self.total is None or self.total - self.position <= SPLIT_ABOVE * size or not self.sources:
            return None
        limit = self.position + AHEAD * size
        for segment in sorted(self._by_start.values(), key=lambda s: s.start):
            if not segment.helper and not segment.complete and segment.start >= self.stream_end:
                if segment.start >= limit:
                    return None
                segment.helper = True
                return segment
        start = max([self.stream_end, *(s.end for s in self._by_start.values())])
        if start >= min(limit, self.total):
            return None
        end = min(start + self._length(start), self.total)
        path = segment_path(self.partial, start, end)
        path.touch()
        segment = self._by_start[start] = Segment(start, end, path, helper=True)
        return segment

    def _help(self, segment: Segment, source: str) -> None:
        """A helper: fetch segments into their files while the cap has room for it."""
        try:
            while segment is not None:
                try:
                    self.fetch_range(source, segment, self._wrote(segment, source), lambda: self.stopping)
                except Interrupted:
                    return
                except FetchError as error:
                    print(f"{source}: not used for segments of this file: {error}", file=self.log, flush=True)
                    with self._cond:
                        if source in self.sources:
                            self.sources.remove(source)
                        self.splittable = self.splittable and bool(self.sources)
                    return
                finally:
                    with self._cond:
                        segment.helper = False
                        self._cond.notify_all()
                if self.stopping or BUDGET.contended():
                    return
                with self._cond:
                    segment = self._claim()
        finally:
            BUDGET.release()

    def _wrote(self, segment: Segment, source: str) -> Callable[[int], None]:
        def wrote(size: int) -> None:
            with self._cond:
                segment.fetched += size
                self.served[source] = self.served.get(source, 0) + size
                self._cond.notify_all()

        return wrote

    def _drop_all(self) -> None:
        for segment in self._by_start.values():
            segment.path.unlink(missing_ok=True)
        self._by_start.clear()

    def discard(self) -> None:
        """The own connection starts the file over: stop the helpers, forget every segment."""
        self.close()
        with self._cond:
            self._drop_all()
            self.splittable = False
            self.stopping = False

    def close(self, timeout: float = 4 * TICK) -> None:
        """Stop the helpers (their bytes stay for the next run) and wait for them."""
        self.stopping = True
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
