"""Tarballs extracted safely: one streaming pass into a staging folder, members checked
(no absolute paths, no '..', no links out, nothing outside the tarball's lane), then moved into place."""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

from mirage_reffiles.errors import FetchError, UnpackError
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.bounds import Bounds
from mirage_reffiles.transfer.progress import Progress
from mirage_reffiles.tree.disk import require_free_space
from mirage_reffiles.tree.layout import ARCHIVE_DIR, ENV_FILE, STATE_DIR, TARBALL_FOLDERS, tarball_member_destination
from mirage_reffiles.tree.records import Produced
from mirage_reffiles.unpack.content import head_of, magic_for
from mirage_reffiles.unpack.gunzip import INFLATE_ERRORS, gzip_reader
from mirage_reffiles.unpack.hashing import sha256_of

#: Bytes read at a time past the tar's end.
READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Lane:
    """Where a tarball may create files under MIRAGE_DATA: inside ``folder`` (anywhere when None)
    but not inside the ``nested`` lanes of other kinds, never a ``reserved`` file (another row's,
    such as a dark) nor the build's own bookkeeping, environment file or kept archives."""

    folder: PurePosixPath | None = None
    kind: str = ""
    nested: tuple[PurePosixPath, ...] = ()
    reserved: frozenset[str] = frozenset()

    @classmethod
    def of(cls, kind: str, instrument: str, reserved: frozenset[str] = frozenset()) -> Lane:
        """The lane of a tarball of ``kind`` for ``instrument`` (see :data:`.layout.TARBALL_FOLDERS`);
        a blank ``kind`` (not known) keeps only the ``reserved`` files and the build's own safe."""
        if not kind:
            return cls(reserved=reserved)
        if kind not in TARBALL_FOLDERS:
            raise FetchError(f"no folder is declared for tarballs of kind {kind!r}; add it to layout.TARBALL_FOLDERS")
        folders = {name: PurePosixPath(f.format(instrument=instrument)) for name, f in TARBALL_FOLDERS.items()}
        folder = folders.pop(kind)
        nested = tuple(other for other in folders.values() if other != folder and other.is_relative_to(folder))
        return cls(folder, kind, nested, reserved)

    def refusal(self, destination: str, is_dir: bool) -> str | None:
        """Why a member may not be created at ``destination`` (under MIRAGE_DATA); None when it may."""
        path = PurePosixPath(destination)
        if path.parts[0] in (STATE_DIR, ARCHIVE_DIR) or destination == ENV_FILE:
            return f"{destination!r} belongs to the build itself"
        if destination in self.reserved:
            return f"{destination!r} is another row's file"
        if self.folder is None:
            return None
        if is_dir and self.folder.is_relative_to(path):
            return None  # a parent of the lane: creates no file
        lane = f"a {self.kind} tarball may only create files under {self.folder.as_posix()}/"
        if not path.is_relative_to(self.folder):
            return f"{destination!r} is outside its lane: {lane}"
        inner = next((other for other in self.nested if path.is_relative_to(other)), None)
        if inner is not None and not is_dir:
            return f"{destination!r} is inside {inner.as_posix()}/, another kind's folder: {lane}"
        return None


#: Where a member goes under MIRAGE_DATA, given its name in the archive; None to leave it out.
Rename = Callable[[str], str | None]


def _member_filter(
    member: tarfile.TarInfo, dest_path: str, lane: Lane, rename: Rename = tarball_member_destination
) -> tarfile.TarInfo | None:
    """Name the member by ``rename`` (by default: drop the leading ``mirage_data/``) and refuse
    anything unsafe or outside ``lane``; a member ``rename`` leaves out is skipped.

    Absolute names and ``..`` are refused outright; Python's ``data`` filter
    then refuses links that point outside the destination, devices and fifos.
    """
    for path in (member.name, member.linkname if member.islnk() else ""):
        if path.startswith("/") or ".." in PurePosixPath(path).parts:
            raise UnpackError(f"unsafe member {member.name!r} refused: absolute path or '..' in {path!r}")
    name = rename(member.name)
    if name is None:
        return None
    if problem := lane.refusal(name, member.isdir()):
        raise UnpackError(f"member {member.name!r} refused: {problem}")
    changes = {"name": name}
    if member.islnk():  # hard links name another member
        changes["linkname"] = rename(member.linkname) or member.linkname
        if not os.path.lexists(os.path.join(dest_path, changes["linkname"])):
            raise UnpackError(f"hard link {member.name!r} refused: it names {member.linkname!r}, no earlier member")
    try:
        return tarfile.data_filter(member.replace(**changes, deep=False), dest_path)
    except tarfile.FilterError as error:
        raise UnpackError(f"unsafe member {member.name!r} refused: {error}") from None


def _check_kind(member: tarfile.TarInfo, path: Path) -> None:
    """Refuse a member that is not the kind of file its name says (an error page saved as ``.fits``)."""
    magic = magic_for(member.name)
    if magic is not None and not (head := head_of(path, len(magic))).startswith(magic):
        raise UnpackError(f"member {member.name!r} refused: it should begin with {magic!r}, it begins with {head!r}")


class _Counted:
    """A reader (and its context) that tells ``check`` how many bytes it has read, before it hands them out."""

    def __init__(self, stream, check: Callable[[int], None]):
        self._stream, self._check, self.count = stream, check, 0

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc) -> None:
        self._stream.close()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        self._check(self.count)
        return data


def extract_tarball(
    archive: Path,
    staging: Path,
    log: TextIO | None = None,
    size: int | None = None,
    lane: Lane | None = None,
    rename: Rename = tarball_member_destination,
    bounds: Bounds | None = None,
) -> list[Produced]:
    """Extract ``archive`` into the empty folder ``staging``, in one pass over its bytes.

    ``size``, the tar stream's unpacked size when known, must fit in the free
    space first. The gzip stream is read to its end, past the tar's, so that
    its CRC and length are checked. Returns each regular file extracted, relative to
    ``staging``; ``rename`` says where each member goes (by default its name
    without the leading ``mirage_data/``), or that it is left out. An unsafe
    member, one outside ``lane`` or one that is not what its name says
    refuses the whole archive (the caller drops ``staging``); a corrupt or
    truncated archive is an :class:`UnpackError`, and so is one with no
    file. ``bounds`` (see :mod:`.transfer.bounds`) refuses a member whose
    size, from its header, would take the files extracted past the unpacked
    bound before anything of it is written (a member made sparse to
    terabytes is refused at once), and a stream that inflates past it.
    """
    lane = lane or Lane()
    bounds = bounds or Bounds()
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    if size:
        require_free_space(staging, size, f"unpacking {archive.name}")
    progress = Progress(f"unpacking {archive.name}", size, stream=log, on_board=False)
    done = extracted = 0
    try:
        with (
            _Counted(gzip_reader(archive), bounds.check_tar_stream) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for member in tar:
                interrupt.check(f"unpacking {archive.name}")  # the complete download stays for the next run
                if member.isreg() and rename(member.name) is not None:
                    extracted += member.size
                    bounds.check_unpacked(extracted, f"member {member.name!r} ({member.size:,} bytes) says it")
                tar.extract(member, staging, filter=functools.partial(_member_filter, lane=lane, rename=rename))
                if member.isreg() and (name := rename(member.name)) is not None:
                    _check_kind(member, staging / name)
                done += member.size if member.isreg() else 0
                progress.update(done)
            while stream.read(READ_BLOCK):  # to the gzip trailer: its CRC covers the whole stream
                interrupt.check(f"unpacking {archive.name}")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, *INFLATE_ERRORS) as error:
        raise UnpackError(f"corrupt or truncated tarball ({error})") from None
    progress.finish(done)
    files = [path for path in sorted(staging.rglob("*")) if path.is_file() and not path.is_symlink()]
    if not files:
        raise UnpackError(f"empty archive: {archive.name} holds no file to extract")
    bounds.check_unpacked_total(sum(path.stat().st_size for path in files))
    return [Produced(path.relative_to(staging).as_posix(), path.stat().st_size, sha256_of(path)) for path in files]


def move_into_place(staging: Path, root: Path) -> None:
    """Move every file under ``staging`` to the same relative place under ``root``.

    Each move is a rename within one filesystem, so each file appears whole.
    """
    for path in sorted(staging.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        target = root / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
