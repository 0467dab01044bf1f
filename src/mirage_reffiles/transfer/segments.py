"""Segmented downloads: the spare connections of the download cap fetch later parts of a running file.

One connection per file is fast while as many files as connections run at
once, not in a build's tail (one 6 GB dark on one connection). Each HTTP
connection of this process takes a slot of :data:`BUDGET`, sized from the
``downloads`` cap, so a server never sees more connections from one run
than the cap, whatever ``--cores`` or ``--jobs`` say. A download lends
the spare slots to helper threads when that saves time (see :func:`pays`):
when what nobody fetches yet would take clearly longer on one connection,
at the rate its own connections measure, than on the connections at hand,
a request's cost included. So a 50 MB file on a 2 MB/s connection (25 s) is
split and the same file at 200 MB/s (0.25 s) is not. Each helper fetches a
later byte range (a *segment*, :data:`SEGMENT_SIZE` bytes unless
:meth:`Budget.configure` sets another size) into
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

from mirage_reffiles.errors import Interrupted
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.partial import pieces, segment_path
from mirage_reffiles.tree.door import open_file

#: Bytes of one segment: a request per 32 MB costs one round trip (about 1.6 s of transfer at 20 MB/s each).
SEGMENT_SIZE = 32 << 20
#: A connection's rate is measured over its first stretch of this many seconds (from its first byte)...
MEASURE_S = 0.1
#: ...then over each next stretch of this many.
REMEASURE_S = 1.0
#: The rate of a stretch weighs this much against what earlier stretches measured (the wire's rate changes as
#: other downloads start and end).
MEASURE_WEIGHT = 0.5
#: A split must save at least this many seconds, and this fraction of the time on one connection: below that,
#: a measuring error or a busy moment of the machine would cost more than it saves.
MIN_GAIN_S = 0.25
MIN_GAIN_SHARE = 0.25
#: The most segments' bytes fetched ahead of the unpacker, per file: their disk use (256 MB).
AHEAD = 8
#: Near the unpacker and near the end of a file, segments shrink down to what a connection fetches in this many
#: seconds (at least this many requests' cost), or to an eighth of a segment (4 MB) while no rate is measured.
SHORTEST_S = 0.1
SHORTEST_REQUESTS = 2
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


def pays(rest: int, rate: float | None, cost: float, connections: int) -> bool:
    """Whether ``rest`` bytes take clearly less time on ``connections`` connections than on one.

    ``rate`` is what one connection moves (bytes/s; None: not measured yet)
    and ``cost`` the seconds a request takes before its first byte.

    >>> pays(50_000_000, 2e6, 0.02, 8)  # 25 s on one connection, 3.1 s on eight
    True
    >>> pays(50_000_000, 200e6, 0.02, 8)  # 0.25 s on one connection
    False
    """
    if not rate or connections < 2:
        return False
    alone = rest / rate
    shared = cost + rest / (rate * connections)
    return alone - shared >= max(MIN_GAIN_S, MIN_GAIN_SHARE * alone)


class Meter:
    """One connection's flow, told to its file's :class:`Segments`: the seconds before its first byte, then
    its rate over stretches from that byte on (the first read's bytes arrived before it: not counted)."""

    def __init__(self, segments: Segments):
        self.segments = segments
        self.asked = time.monotonic()
        self.since: float | None = None
        self.bytes = 0

    def arrived(self, size: int) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            self.segments.measured(cost=now - self.asked)
            return
        self.bytes += size
        elapsed = now - self.since
        if elapsed >= (MEASURE_S if self.segments.rate is None else REMEASURE_S):
            self.segments.measured(rate=self.bytes / elapsed)
            self.since, self.bytes = now, 0


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
        self.granted = 0  # and has taken, or is taking, the bytes up to here
        self.splittable = False
        self.split = False  # a split paid once: helpers fetch on to the end
        self.stopping = False
        self.served: dict[str, int] = {}  # bytes fetched by helpers, per source
        self.rate: float | None = None  # bytes/s of one of its connections, as measured (see Meter)
        self.cost = 0.0  # seconds before a request's first byte, as measured
        self._meter: Meter | None = None  # the own connection's

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

    def asking(self) -> None:
        """The own connection sends a request: measure it anew."""
        self._meter = Meter(self)

    def arrived(self, size: int) -> None:
        """``size`` bytes came on the own connection (taken up to :attr:`granted`): measure, and lend spare
        slots when that pays. Once the first rate is known, the own connection's first stretch (sized before
        it was) shrinks to what that rate fetches soon, so that helpers take the rest of it."""
        first = self.rate is None
        if self._meter is not None:
            self._meter.arrived(size)
        if first and self.rate is not None and self.splittable and self.total is not None:
            with self._cond:
                taken = max(self.granted, self.position)
                self.stream_end = min(self.stream_end, taken + self._length(taken))
        self.spawn()

    def measured(self, rate: float | None = None, cost: float | None = None) -> None:
        """A connection of this file measured its ``rate`` or a request's ``cost``; a rate weighs
        :data:`MEASURE_WEIGHT` against the earlier ones."""
        with self._cond:
            if cost is not None:
                self.cost = cost
            if rate is not None:
                self.rate = rate if self.rate is None else MEASURE_WEIGHT * rate + (1 - MEASURE_WEIGHT) * self.rate

    def limit(self, done: int, size: int) -> int:
        """How many of ``size`` bytes arriving at ``done`` on the own connection to take (fewer: a segment begins)."""
        with self._cond:
            self.position = done
            if self.total is None:
                return size
            while done + size > self.stream_end and self.stream_end < self.total:
                interrupt.check()
                if not self._absorb(self.stream_end):
                    self.granted = self.stream_end
                    return self.stream_end - done
                later = [start for start in self._by_start if start > self.stream_end]
                self.stream_end = min([self.stream_end + self._length(self.stream_end), self.total, *later])
            self.granted = done + size
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
                self.position = done  # together: its bytes are never a gap to fetch again
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
        """How many bytes from ``start`` on one connection takes: a segment, or less (down to
        :data:`SHORTEST_S` of the wire) where it matters that they arrive soon. Near the start of a file (a
        quarter of the offset), so that the unpacker has bytes to unpack in order while the connections ramp
        up; and near its end, where what is left is shared among the connections, so that they finish
        together instead of one or two fetching the last full segments alone."""
        size = BUDGET.segment_size
        share = -(-max(0, (self.total or 0) - start) // (BUDGET.cap or 1))
        shortest = size // TAIL_DIVISOR
        if self.rate:
            shortest = int(self.rate * max(SHORTEST_S, SHORTEST_REQUESTS * self.cost))
        return max(1, min(size, max(shortest, min(start // 4, share))))  # never 0: the loops move on

    def _claim(self) -> Segment | None:
        """The next segment for a helper (under the lock), when a split pays: one left unfinished, else a new one
        at the first bytes past the unpacker and the own connection's stretch that no segment holds."""
        size = BUDGET.segment_size
        if self.total is None or not self.sources or not self._pays():
            return None
        limit = self.position + AHEAD * size
        for segment in sorted(self._by_start.values(), key=lambda s: s.start):
            if not segment.helper and not segment.complete and segment.start >= self.stream_end:
                if segment.start >= limit:
                    return None
                segment.helper = True
                return segment
        start = max(self.stream_end, self.position)  # the first byte past both that no segment holds
        for segment in sorted(self._by_start.values(), key=lambda s: s.start):
            if segment.start > start:
                break
            start = max(start, segment.end)
        if start >= min(limit, self.total):
            return None
        later = [s.start for s in self._by_start.values() if s.start > start]
        end = min(start + self._length(start), self.total, *later)
        path = segment_path(self.partial, start, end)
        path.touch()
        segment = self._by_start[start] = Segment(start, end, path, helper=True)
        return segment

    def _pays(self) -> bool:
        """Whether one more connection (the caller's slot) saves time on what no helper fetches yet (under the
        lock): what the own connection would fetch alone, its own stretch included. Once it did, the rest is
        shared down to the shortest segments, as they finish together.

        At hand: the own connection, the helpers fetching, the caller's and the free slots of the cap."""
        if self.split:  # split already: its tail is shared so that the connections finish together
            return True
        covered = 0  # bytes past the unpacker that segments hold or their helpers are fetching
        for s in self._by_start.values():
            covered += max(0, (s.end if s.helper else s.start + s.fetched) - max(s.start, self.position))
        helpers = sum(s.helper for s in self._by_start.values())
        at_hand = 2 + helpers + max(0, (BUDGET.cap or 0) - BUDGET.used)
        self.split = pays(self.total - self.position - covered, self.rate, self.cost, at_hand)
        return self.split

    def _help(self, segment: Segment, source: str) -> None:
        """A helper: fetch segments into their files while the cap has room for it."""
        try:
            while segment is not None:
                try:
                    self.fetch_range(source, segment, self._wrote(segment, source, Meter(self)), lambda: self.stopping)
                except Interrupted:
                    return
                except Exception as error:  # whatever the source caused: the own connection fetches the rest
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

    def _wrote(self, segment: Segment, source: str, meter: Meter) -> Callable[[int], None]:
        def wrote(size: int) -> None:
            meter.arrived(size)
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
