"""Tarballs extracted safely: one streaming pass into a staging folder, each member through the door
(:mod:`.tree.door`: no absolute paths, no '..', no links, nothing outside the tarball's lane), then each file
moved into place through the door again (nothing another row claims, no link on the way)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TextIO

from mirage_reffiles.errors import UnpackError
from mirage_reffiles.transfer import interrupt
from mirage_reffiles.transfer.bounds import Bounds
from mirage_reffiles.transfer.progress import Progress
from mirage_reffiles.tree.disk import require_free_space, take_final_names
from mirage_reffiles.tree.door import Lane, open_file, writable
from mirage_reffiles.tree.layout import tarball_member_destination
from mirage_reffiles.tree.records import Produced
from mirage_reffiles.unpack.content import head_of, magic_for
from mirage_reffiles.unpack.gunzip import INFLATE_ERRORS, gzip_reader

#: Bytes read at a time past the tar's end.
READ_BLOCK = 1 << 20


#: Where a member goes under MIRAGE_DATA, given its name in the archive; None to leave it out.
Rename = Callable[[str], str | None]


def _destination(member: tarfile.TarInfo, rename: Rename) -> str | None:
    """Where ``member`` goes under MIRAGE_DATA, by ``rename`` (by default: its name without the leading
    ``mirage_data/``); None for a member ``rename`` leaves out. Absolute names and ``..`` are refused
    outright, and so is anything but a file or a folder: Mirage's archives hold nothing else, and a
    link created while unpacking is a path for later members to escape by."""
    if member.name.startswith("/") or ".." in PurePosixPath(member.name).parts:
        raise UnpackError(f"unsafe member {member.name!r} refused: absolute path or '..' in its name")
    name = rename(member.name)
    if name is not None and not (member.isreg() or member.isdir()):
        what = "link" if member.issym() or member.islnk() else "device or fifo"
        raise UnpackError(
            f"unsafe member {member.name!r} refused: a {what}; an archive may hold files and folders only"
        )
    return name


def _unpack_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path, what: str) -> tuple[int, str]:
    """Write the file ``member`` at ``path`` (a new file: a name twice in one archive is refused);
    returns its size and SHA-256. A stop ends it between blocks (``what`` names the unpacking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        out = open_file(path, "xb", error=UnpackError)
    except FileExistsError:
        raise UnpackError(f"member {member.name!r} refused: the archive holds it twice") from None
    with out, tar.extractfile(member) as source:
        while block := source.read(READ_BLOCK):
            interrupt.check(what)  # a large member is no reason to keep a stopped run going
            out.write(block)
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


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
    done, produced = 0, []
    try:
        with (
            _Counted(gzip_reader(archive), bounds.check_tar_stream) as stream,
            tarfile.open(fileobj=stream, mode="r|") as tar,
        ):
            for member in tar:
                interrupt.check(f"unpacking {archive.name}")  # the complete download stays for the next run
                if (name := _destination(member, rename)) is None:
                    continue
                # The door checks the name, the lane, and that nothing staged so far is in the way.
                path = writable(
                    staging, name, lane, is_dir=member.isdir(), error=UnpackError, what=f"member {member.name!r}"
                )
                if member.isdir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                # Its size from its header, before a byte of it is written: a member made sparse to terabytes.
                bounds.check_unpacked(done + member.size, f"member {member.name!r} ({member.size:,} bytes) says it")
                produced.append(Produced(name, *_unpack_member(tar, member, path, f"unpacking {archive.name}")))
                _check_kind(member, path)
                done += member.size
                progress.update(done)
            while stream.read(READ_BLOCK):  # to the gzip trailer: its CRC covers the whole stream
                interrupt.check(f"unpacking {archive.name}")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, *INFLATE_ERRORS) as error:
        raise UnpackError(f"corrupt or truncated tarball ({error})") from None
    progress.finish(done)
    if not produced:
        raise UnpackError(f"empty archive: {archive.name} holds no file to extract")
    bounds.check_unpacked_total(sum(item.size for item in produced))
    return sorted(produced, key=lambda item: PurePosixPath(item.path))


def move_into_place(staging: Path, root: Path, files: list[Produced], lane: Lane) -> None:
    """Move each of ``files`` from ``staging`` to the same relative place under ``root``.

    Every destination passes the door first (the lane, paths other rows
    claim, no symbolic link on the way, no file where a folder must be), so
    a refused archive changes nothing; each move is then a rename within
    one filesystem, so each file appears whole.
    """
    targets = [writable(root, item.path, lane, error=UnpackError, what=f"member {item.path!r}") for item in files]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    take_final_names((staging / item.path, target) for item, target in zip(files, targets, strict=True))
