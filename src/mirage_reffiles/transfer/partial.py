"""The compressed bytes of an unfinished download, kept so that it can resume.

Without resume points, one file (``<id>.gz.part``) holds every byte from
the start; a later run feeds them to the unpacker again and asks the
server for the rest.

When the unpacker can save its state (:class:`.unpack.ResumableGunzipSink`),
the bytes are kept as a *chain* of files, each holding the bytes from the
offset in its name: ``<id>.gz.part`` (from 0), ``<id>.gz.part.from<N>``
(bytes the download's own connection received from N on) and
``<id>.gz.part.seg<N>-<M>`` (a segment a helper connection fetched, see
:mod:`.segments`: it joins the chain where it is read, without being
copied). Every :data:`RESUME_EVERY` bytes a resume point is saved in
``<id>.gz.part.resume`` (JSON): where unpacking starts again (byte P), the
file of the chain holding P, and the SHA-256 state of the download up to
``hashed_to``. Then the files of the chain before the one holding P are
deleted, so a download keeps about RESUME_EVERY compressed bytes plus a
segment on disk, not the whole file. The point is written (and renamed into
place) before the files it replaces are deleted, so a kill at any moment
leaves a consistent chain.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from mirage_reffiles.errors import FetchError, UnpackError
from mirage_reffiles.tree.door import is_regular, open_file
from mirage_reffiles.unpack.hashing import Sha256, new_sha256
from mirage_reffiles.unpack.inflate import available as inflate_available

#: Compressed bytes between resume points.
RESUME_EVERY = 16 << 20
READ_BLOCK = 8 << 20


def _resume_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".resume")


def _data_path(partial: Path, start: int) -> Path:
    return partial if start == 0 else partial.with_name(f"{partial.name}.from{start}")


def segment_path(partial: Path, start: int, end: int) -> Path:
    """Where a segment of bytes ``start`` to ``end`` (excluded) of the download is kept."""
    return partial.with_name(f"{partial.name}.seg{start}-{end}")


@dataclass
class Piece:
    """A file of kept bytes: those from ``start`` on (``end`` is where a segment's range ends)."""

    start: int
    path: Path
    size: int
    end: int | None = None  # a segment's; None for the bytes of the own connection

    @property
    def stop(self) -> int:
        return self.start + self.size


def _piece(partial: Path, path: Path, size: int) -> Piece | None:
    """What the kept file ``path`` holds, from its name; None when it is not one."""
    suffix = path.name[len(partial.name) :]
    if own := re.fullmatch(r"(?:\.from(\d+))?", suffix):
        return Piece(int(own.group(1) or 0), path, size)
    if segment := re.fullmatch(r"\.seg(\d+)-(\d+)", suffix):
        return Piece(int(segment.group(1)), path, size, int(segment.group(2)))
    return None


def pieces(partial: Path) -> list[Piece]:
    """Every file kept for ``partial`` but its resume point, in no particular order."""
    found = []
    for path in partial.parent.glob(f"{partial.name}*"):
        try:
            status = path.lstat()
        except FileNotFoundError:
            continue
        # A link is never kept bytes: writing at its name is refused (see tree.door.open_file).
        if stat.S_ISREG(status.st_mode) and (piece := _piece(partial, path, status.st_size)) is not None:
            found.append(piece)
    return found


def _read_state(partial: Path) -> dict | None:
    try:
        with open_file(_resume_path(partial), "rb") as handle:
            state = json.loads(handle.read())
        state.setdefault("data_start", state["partial_start"])  # written before chains: one file from the point
        return state
    except (OSError, FetchError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _chain(found: list[Piece], start: int) -> list[Piece]:
    """The files of ``found`` holding the bytes from ``start`` on, one after another, as long as they follow on."""
    by_start: dict[int, Piece] = {}
    for piece in found:
        usable = piece.size and (piece.end is None or piece.stop <= piece.end)
        if usable and (piece.start not in by_start or piece.size > by_start[piece.start].size):
            by_start[piece.start] = piece
    chain, position = [], start
    while (piece := by_start.get(position)) is not None:
        chain.append(piece)
        position = piece.stop
    return chain


def _kept(partial: Path, found: list[Piece] | None = None) -> tuple[dict | None, list[Piece], int]:
    """The resume point (None: from the start), the chain of files it resumes from, and where that chain ends;
    ``found`` is :func:`pieces` of ``partial`` when the caller has listed them already."""
    state = _read_state(partial)
    start, resume = (state["data_start"], state["partial_start"]) if state else (0, 0)
    chain = _chain(pieces(partial) if found is None else found, start)
    end = chain[-1].stop if chain else start
    if end < resume:  # the files holding the point are gone: nothing kept can be used
        return None, [], 0
    return state, chain, end


def kept_bytes(partial: Path) -> int:
    """How many bytes of the download are kept, and will not be fetched again: those up to where
    its next request starts, and the segments fetched beyond that."""
    found = pieces(partial)
    _, _, end = _kept(partial, found)
    ahead = sum(p.size for p in found if p.end is not None and p.start >= end)
    return end + ahead


def resume_offset(partial: Path) -> int:
    """Where the download's next request starts: the end of the bytes kept one after another."""
    return _kept(partial)[2]


def _staged_resume_path(partial: Path) -> Path:
    """Where a resume point is written before it replaces the last (a kill may leave it)."""
    return partial.with_name(partial.name + ".resume.new")


def remove_partial(partial: Path) -> None:
    """Delete every file kept for ``partial``."""
    _resume_path(partial).unlink(missing_ok=True)
    _staged_resume_path(partial).unlink(missing_ok=True)
    for piece in pieces(partial):
        piece.path.unlink(missing_ok=True)


class PartialStore:
    """Keeps a download's bytes: in ``partial``, or a chain of files with resume points when ``sink`` can make them."""

    def __init__(self, partial: Path, sink, every: int | None = None):
        self.partial = partial
        self.sink = sink
        self.every = every or RESUME_EVERY
        self.points = hasattr(sink, "take_point") and inflate_available()  # a point saves the SHA-256 state too
        self._chain: list[Piece] = []
        self._own = None  # the file the own connection's bytes are appended to, when the chain ends in it
        self._position = 0  # where the kept bytes end
        self._start = 0  # where the last resume point is
        self._last_point = 0
        self._asked = False

    @property
    def keeps_segments(self) -> bool:
        """Whether a segment's file joins the chain as it is (else its bytes are copied into ``partial``)."""
        return self.points

    def open(self):
        """Feed what is kept to the sink; returns ``(bytes so far, their SHA-256 hasher)``."""
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        state, chain, _ = _kept(self.partial) if self.points else (None, [], 0)
        if state is not None:
            try:
                self.sink.resume(state["sink"])
            except (UnpackError, KeyError, TypeError):
                state = None
        if state is None and _resume_path(self.partial).exists():  # what is kept cannot be used: start again
            remove_partial(self.partial)
            chain = []
        if state is None:
            self.sink.reset()
            digest, self._start, hashed_to = new_sha256(), 0, 0
            whole = _data_path(self.partial, 0)
            if not self.points and is_regular(whole):
                chain = [Piece(0, whole, whole.lstat().st_size)]
        else:
            digest, self._start, hashed_to = Sha256.restore(state["sha256"]), state["partial_start"], state["hashed_to"]
        self._drop_stale(chain)
        done = self._start
        for piece in chain:
            with open_file(piece.path, "rb") as handle:
                handle.seek(max(0, done - piece.start))
                while block := handle.read(READ_BLOCK):
                    if done + len(block) > hashed_to:  # the hash state already covers the bytes before hashed_to
                        digest.update(block[max(0, hashed_to - done) :])
                    self.sink.write(block)
                    done += len(block)
        self._chain, self._position, self._last_point = chain, done, done
        return done, digest

    def _drop_stale(self, chain: list[Piece]) -> None:
        """Delete kept files of no use: the own connection's bytes off the chain (left by a kill between
        two renames) and, with a chain, segments that start before it ends without being part of it."""
        end = chain[-1].stop if chain else self._start
        on_chain = {piece.path for piece in chain}
        for piece in pieces(self.partial):
            if piece.path in on_chain:
                continue
            if piece.end is None or (self.keeps_segments and piece.start < end):
                piece.path.unlink(missing_ok=True)

    def write(self, chunk: bytes, segment: Path | None = None) -> None:
        """Keep ``chunk``, the next bytes of the download; with ``segment``, they are that file's bytes at
        this offset already, and only the chain refers to it (when :attr:`keeps_segments`)."""
        if segment is not None and self.keeps_segments:
            if not self._chain or self._chain[-1].path != segment:
                self._close_own()
                self._chain.append(_piece(self.partial, segment, 0))
            self._chain[-1].size += len(chunk)
            self._position += len(chunk)
            return
        if self._own is None:
            last = self._chain[-1] if self._chain else None
            if last is None or last.end is not None or last.stop != self._position:
                last = Piece(self._position, _data_path(self.partial, self._position), 0)
                self._chain.append(last)
            self._own = open_file(last.path, "ab")
        self._own.write(chunk)
        self._chain[-1].size += len(chunk)
        self._position += len(chunk)

    def _close_own(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    def written(self, done: int, digest) -> None:
        """After each chunk: ask for a resume point when one is due, save it when it comes."""
        if not self.points:
            return
        if not self._asked and done - self._last_point >= self.every:
            self.sink.want_point()
            self._asked = True
        point = self.sink.take_point()
        if point is None or point["input_offset"] <= self._start:
            return
        resume = point["input_offset"]
        holding = max((i for i, piece in enumerate(self._chain) if piece.start <= resume), default=len(self._chain))
        drop = self._chain[:holding]
        keep = self._chain[holding:]
        if keep and keep[0] is self._chain[-1] and keep[0].end is None and keep[0].start < resume:
            # The point is in the file the own connection appends to: the bytes from it on start a new one.
            self.flush()
            with open_file(keep[0].path, "rb") as handle:
                handle.seek(resume - keep[0].start)
                tail = handle.read()
            moved = Piece(resume, _data_path(self.partial, resume), len(tail))
            with open_file(moved.path, "wb") as handle:
                handle.write(tail)
            self._close_own()
            drop, keep = [*drop, keep[0]], [moved]
        state = {"sink": point, "sha256": digest.state(), "partial_start": resume, "hashed_to": done,
                 "data_start": keep[0].start if keep else resume}  # fmt: skip
        staged = _staged_resume_path(self.partial)
        with open_file(staged, "wb") as handle:
            handle.write(json.dumps(state).encode())
        os.replace(staged, _resume_path(self.partial))  # from here on, the files before the point's are not needed
        for piece in drop:
            piece.path.unlink(missing_ok=True)
        self._chain = keep
        self._start, self._last_point, self._asked = resume, done, False

    def restart(self):
        """The server sent the file from its start: forget everything; returns a new hasher."""
        self._close_own()
        remove_partial(self.partial)
        self._chain, self._position = [], 0
        self._start = self._last_point = 0
        self._asked = False
        self.sink.reset()
        return new_sha256()

    def flush(self) -> None:
        if self._own is not None:
            self._own.flush()

    def close(self) -> None:
        """Keep what there is for a later run (an empty file is not worth keeping)."""
        self._close_own()
        for piece in pieces(self.partial):
            if piece.end is None and piece.size == 0:
                piece.path.unlink(missing_ok=True)


class NoStore:
    """For a local file: nothing is kept, there is nothing to resume."""

    keeps_segments = False

    def __init__(self, sink):
        self.sink = sink

    def open(self):
        self.sink.reset()
        return 0, new_sha256()

    def write(self, chunk: bytes, segment: Path | None = None) -> None:
        pass

    def written(self, done: int, digest) -> None:
        pass

    def restart(self):
        self.sink.reset()
        return new_sha256()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
