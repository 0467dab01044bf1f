"""The compressed bytes of an unfinished download, kept so that it can resume.

Without resume points, one file (``<id>.gz.part``) holds every byte from
the start; a later run feeds them to the unpacker again and asks the
server for the rest.

When the unpacker can save its state (:class:`.unpack.ResumableGunzipSink`),
every :data:`RESUME_EVERY` bytes a resume point replaces the bytes before
it: ``<id>.gz.part.resume`` (JSON) says where unpacking starts again (byte
N) and the SHA-256 state of the download up to ``hashed_to``;
``<id>.gz.part.from<N>`` holds the bytes from N on. So a download keeps at most about RESUME_EVERY compressed
bytes on disk, not the whole file. A new point is written (and renamed into
place) before the bytes it replaces are deleted, so a kill at any moment
leaves a consistent pair.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mirage_reffiles.errors import UnpackError
from mirage_reffiles.hashing import Sha256, new_sha256
from mirage_reffiles.unpack.inflate import available as inflate_available

#: Compressed bytes between resume points.
RESUME_EVERY = 16 << 20
READ_BLOCK = 8 << 20


def _resume_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".resume")


def _data_path(partial: Path, start: int) -> Path:
    return partial if start == 0 else partial.with_name(f"{partial.name}.from{start}")


def _read_state(partial: Path) -> dict | None:
    try:
        return json.loads(_resume_path(partial).read_text())
    except (OSError, ValueError):
        return None


def kept_bytes(partial: Path) -> int:
    """How many bytes of the download are kept: where the next request starts."""
    state = _read_state(partial)
    start = state["partial_start"] if state else 0
    data = _data_path(partial, start)
    return start + (data.stat().st_size if data.exists() else 0)


def remove_partial(partial: Path) -> None:
    """Delete every file kept for ``partial``."""
    _resume_path(partial).unlink(missing_ok=True)
    for pattern in ("from*", "seg*"):  # resume points' bytes, segments (see .segments)
        for path in partial.parent.glob(f"{partial.name}.{pattern}"):
            path.unlink(missing_ok=True)
    partial.unlink(missing_ok=True)


class PartialStore:
    """Keeps a download's bytes in ``partial`` (and resume points, when ``sink`` can make them)."""

    def __init__(self, partial: Path, sink, every: int | None = None):
        self.partial = partial
        self.sink = sink
        self.every = every or RESUME_EVERY
        self.points = hasattr(sink, "take_point") and inflate_available()  # a point saves the SHA-256 state too
        self._file = None
        self._start = 0
        self._last_point = 0
        self._asked = False

    def open(self):
        """Feed what is kept to the sink; returns ``(bytes so far, their SHA-256 hasher)``."""
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        state = _read_state(self.partial)
        if state is not None:
            try:
                if not self.points:
                    raise UnpackError("this sink cannot resume from a point")
                self.sink.resume(state["sink"])
            except (UnpackError, KeyError, TypeError):
                remove_partial(self.partial)  # what is kept cannot be used: start again
                state = None
        if state is None:
            self.sink.reset()
            digest, self._start, hashed_to = new_sha256(), 0, 0
        else:
            digest, self._start, hashed_to = Sha256.restore(state["sha256"]), state["partial_start"], state["hashed_to"]
        current = _data_path(self.partial, self._start)
        for stale in self.partial.parent.glob(f"{self.partial.name}.from*"):  # left by a kill mid-point
            if stale != current:
                stale.unlink()
        self._file = open(current, "a+b")  # noqa: SIM115
        self._file.seek(0)
        done = self._start
        while block := self._file.read(READ_BLOCK):
            if done + len(block) > hashed_to:  # the hash state already covers the bytes before hashed_to
                digest.update(block[max(0, hashed_to - done) :])
            self.sink.write(block)
            done += len(block)
        self._last_point = done
        return done, digest

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)

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
        # The bytes from the point on start the next file; the state says the hash covers them up to `done`.
        self._file.flush()
        self._file.seek(point["input_offset"] - self._start)
        new = _data_path(self.partial, point["input_offset"])
        new.write_bytes(self._file.read(done - point["input_offset"]))
        state = {"sink": point, "sha256": digest.state(), "partial_start": point["input_offset"], "hashed_to": done}
        staged = self.partial.with_name(self.partial.name + ".resume.new")
        staged.write_text(json.dumps(state))
        os.replace(staged, _resume_path(self.partial))  # from here on, the bytes before the point are not needed
        self._file.close()
        _data_path(self.partial, self._start).unlink(missing_ok=True)
        self._file = open(new, "a+b")  # noqa: SIM115
        self._start, self._last_point, self._asked = point["input_offset"], done, False

    def restart(self):
        """The server sent the file from its start: forget everything; returns a new hasher."""
        self._file.close()
        remove_partial(self.partial)
        self._file = open(self.partial, "a+b")  # noqa: SIM115
        self._start = self._last_point = 0
        self._asked = False
        self.sink.reset()
        return new_sha256()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        """Keep what there is for a later run (an empty file is not worth keeping)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if not _resume_path(self.partial).exists() and self.partial.exists() and self.partial.stat().st_size == 0:
            self.partial.unlink()


class NoStore:
    """For a local file: nothing is kept, there is nothing to resume."""

    def __init__(self, sink):
        self.sink = sink

    def open(self):
        self.sink.reset()
        return 0, new_sha256()

    def write(self, chunk: bytes) -> None:
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
