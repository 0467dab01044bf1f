"""One door for every write: where the build may put bytes under a root (MIRAGE_DATA, a CRDS cache).

Like git's ``has_symlink_leading_path``, which checkout and apply go
through so that no hostile tree writes outside the work tree, every path
the build writes below a root is decided here, by :func:`writable`:

- the name is a plain relative name (no absolute path, no ``..``, no empty
  or ``.`` part): a name from a server, a table or an archive is a name,
  never a way out;
- it lies in the writer's :class:`Lane` (the folder its row owns, not the
  build's own files, not another kind's folder, not a path another row
  claims);
- no component below the root that exists is a symbolic link (each is
  ``lstat``-ed), and none but the last is anything but a folder: bytes are
  never written through a link, and a link is never created.

Files are then opened with :func:`open_file`, which refuses a link at the
last component too (``O_NOFOLLOW``), should one appear after the check.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from mirage_reffiles.errors import FetchError
from mirage_reffiles.tree.layout import ARCHIVE_DIR, ENV_FILE, STATE_DIR, TARBALL_FOLDERS

#: What a name from a server or a table may be: one plain file name, no folder.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")

#: The build's own files under MIRAGE_DATA, off limits to every row.
BUILD_OWN = (PurePosixPath(STATE_DIR), PurePosixPath(ARCHIVE_DIR), PurePosixPath(ENV_FILE))


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is one file name (letters, digits, ``_.-``), neither ``.`` nor ``..``.

    >>> [is_plain_name(name) for name in ("jwst_0001.pmap", "..", "a/b", "")]
    [True, False, False, False]
    """
    return bool(PLAIN_NAME.fullmatch(name)) and name not in (".", "..")


@dataclass(frozen=True)
class Lane:
    """Where a writer may create files below its root: inside ``folder`` (anywhere when None),
    not inside the ``nested`` folders of other kinds, never the build's ``own`` files nor a path
    ``claimed`` by another row (path -> that row's id)."""

    folder: PurePosixPath | None = None
    kind: str = ""
    nested: tuple[PurePosixPath, ...] = ()
    claimed: Mapping[str, str] = field(default_factory=dict)
    own: tuple[PurePosixPath, ...] = BUILD_OWN

    @classmethod
    def of(cls, kind: str, instrument: str, claimed: Mapping[str, str] | None = None) -> Lane:
        """The lane of a tarball of ``kind`` for ``instrument`` (see :data:`.layout.TARBALL_FOLDERS`);
        a blank ``kind`` (not known) keeps only the ``claimed`` files and the build's own safe."""
        claimed = dict(claimed or {})
        if not kind:
            return cls(claimed=claimed)
        if kind not in TARBALL_FOLDERS:
            raise FetchError(f"no folder is declared for tarballs of kind {kind!r}; add it to layout.TARBALL_FOLDERS")
        folders = {name: PurePosixPath(f.format(instrument=instrument)) for name, f in TARBALL_FOLDERS.items()}
        folder = folders.pop(kind)
        nested = tuple(other for other in folders.values() if other != folder and other.is_relative_to(folder))
        return cls(folder, kind, nested, claimed)

    @classmethod
    def inside(cls, folder: str | Path) -> Lane:
        """The lane of one of the build's own folders (its partial downloads, records, kept archives)."""
        return cls(PurePosixPath(folder), own=())

    def claiming(self, claimed: Mapping[str, str]) -> Lane:
        """This lane with more paths claimed by other rows."""
        return replace(self, claimed={**self.claimed, **claimed})

    def refusal(self, path: PurePosixPath, is_dir: bool = False) -> str | None:
        """Why ``path`` (relative to the root) may not be created in this lane; None when it may."""
        shown = repr(path.as_posix())
        if any(path.is_relative_to(own) for own in self.own):
            return f"{shown} belongs to the build itself"
        if (owner := self.claimed.get(path.as_posix())) is not None:
            return f"{shown} is a file of row {owner!r}, which landed first: a path belongs to one row"
        if self.folder is None:
            return None
        if is_dir and self.folder.is_relative_to(path):
            return None  # a parent of the lane: creates no file
        lane = f"a {self.kind} tarball may only create files under {self.folder.as_posix()}/"
        if not self.kind:
            lane = f"only {self.folder.as_posix()}/ may be written here"
        if not path.is_relative_to(self.folder):
            return f"{shown} is outside its lane: {lane}"
        inner = next((other for other in self.nested if path.is_relative_to(other)), None)
        if inner is not None and not is_dir:
            return f"{shown} is inside {inner.as_posix()}/, another kind's folder: {lane}"
        return None


#: The lane of the build's own bookkeeping under MIRAGE_DATA (records, partial downloads, staging).
BOOKKEEPING = Lane.inside(STATE_DIR)


def plain_path(name: str) -> PurePosixPath | None:
    """``name`` as a relative path of plain parts; None for an absolute name, ``..``, ``.`` or an empty part."""
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in name.split("/")):
        return None
    return PurePosixPath(name)


def writable(
    root: Path,
    name: str | Path,
    lane: Lane | None = None,
    *,
    is_dir: bool = False,
    error: type[Exception] = FetchError,
    what: str = "",
) -> Path:
    """The path to write ``name`` at under ``root``, or ``error`` saying which rule refuses it.

    ``name`` is a name relative to ``root`` (text), or a :class:`~pathlib.Path` under it. The name must be
    plain (see :func:`plain_path`) and lie in ``lane``; below ``root`` no
    existing component may be a symbolic link, and each but the last must
    be a folder (the last one a folder exactly when ``is_dir``). The
    refusal begins with ``what`` (by default, writing ``name``).

    >>> writable(Path("/nowhere"), "nircam/darks/a.fits")
    PosixPath('/nowhere/nircam/darks/a.fits')
    >>> writable(Path("/nowhere"), "nircam/../../etc/passwd")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    mirage_reffiles.errors.FetchError: writing 'nircam/../../etc/passwd' refused: it is not a plain relative name ...
    """
    root = Path(root)
    if isinstance(name, Path):  # a path: it must be under the root, as written (its '..' are refused below)
        if not name.is_relative_to(root):
            raise error(f"{what or f'writing {str(name)!r}'} refused: it is not under {root}")
        name = name.relative_to(root).as_posix()
    text = name
    what = what or f"writing {text!r}"
    if (relative := plain_path(text)) is None:
        raise error(f"{what} refused: it is not a plain relative name (absolute, or an empty, '.' or '..' part)")
    if lane is not None and (problem := lane.refusal(relative, is_dir)):
        raise error(f"{what} refused: {problem}")
    path = root
    for index, part in enumerate(relative.parts):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            break  # nothing of the rest exists yet: the folders will be made as folders
        last = index == len(relative.parts) - 1
        if stat.S_ISLNK(mode):
            raise error(f"{what} refused: {path} is a symbolic link, and the build never writes through one; "
                        "remove it")  # fmt: skip
        if (not last or is_dir) and not stat.S_ISDIR(mode):
            raise error(f"{what} refused: {path} is a file, not a folder")
        if last and not is_dir and stat.S_ISDIR(mode):
            raise error(f"{what} refused: {path} is a folder, not a file")
    return root / relative


#: ``open`` modes and the flags of each, all with O_NOFOLLOW.
_FLAGS = {
    "rb": os.O_RDONLY,
    "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "xb": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    "ab": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "a+b": os.O_RDWR | os.O_CREAT | os.O_APPEND,
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,  # a log
}


def open_file(path: Path, mode: str, buffering: int = -1, error: type[Exception] = FetchError):
    """``open(path, mode)`` (a mode of :data:`_FLAGS`), refusing a symbolic link at ``path``
    with ``error`` instead of following it."""
    try:
        descriptor = os.open(path, _FLAGS[mode] | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as failure:
        if failure.errno == errno.ELOOP:
            raise error(
                f"{path} is a symbolic link, and the build never reads or writes through one; remove it"
            ) from None
        raise
    return os.fdopen(descriptor, mode, buffering)


def is_regular(path: Path) -> bool:
    """Whether ``path`` is a regular file itself (a symbolic link to one is not)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
