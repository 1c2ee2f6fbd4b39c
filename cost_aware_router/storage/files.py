"""The one gate for opening files, atomic writes, and names that stay in their folder.

``check_regular`` / ``open_regular`` / ``open_fd`` refuse anything but a regular file (a folder, FIFO, device
or socket is never read or written) and never block on a FIFO. By default they follow links, for files the
user names; ``follow=False`` (the files the pack itself appends to and reads back: the decision log, a scored
folder's rows, lock files) refuses a final symbolic link and a missing parent folder, and may create the file
(``flags`` with ``O_CREAT``). ``atomic_write`` and ``check_writable`` refuse to replace a file unless asked;
``safe_child``, ``resolve_under`` and ``child_dir`` keep names inside their folder (``MAX_NAME_BYTES``).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import RouterError
from .text import printable

try:  # POSIX only: where it is missing (Windows) there is no non-blocking open to undo
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None

MAX_NAME_BYTES = 200  # an output file or folder name (UTF-8 bytes), suffix included: well under NAME_MAX (255)

_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_ALWAYS = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOCTTY", 0)
_WRITING = os.O_WRONLY | os.O_RDWR


# -- the gate: regular files only --------------------------------------------------------------------------------
def file_kind(mode: int) -> str:
    """What a non-regular file is, in words ('a folder', 'a FIFO (named pipe)', ...)."""
    for test, word in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return word
    return "not a regular file"


def _named(what: str, path) -> str:
    return f"{what} {path}" if what else str(path)


def _parent(path) -> str:
    return os.path.dirname(os.fspath(path)) or "."


def _os_error(exc: OSError, what: str, path, error: type[RouterError], writing: bool = False,
              creating: bool = False) -> RouterError:
    name = _named(what, path)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        if creating:
            return error(f"{name} cannot be created (folder {_parent(path)} is missing)")
        return error(f"{name} does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return error(f"{name} is not {'writable' if writing else 'readable'} (permission denied)")
    if exc.errno == errno.ELOOP:
        return error(f"{name} is a symbolic link that cannot be followed")
    if exc.errno == errno.ENXIO:  # a socket, or a FIFO/device without a peer
        return error(f"{name} is a FIFO, socket or device, not a regular file")
    if exc.errno == errno.EISDIR:
        return error(f"{name} is a folder, not a regular file")
    return error(f"{name} cannot be {'written' if writing else 'read'} ({exc.strerror or exc})")


def check_regular(path: str | os.PathLike, what: str = "file", error: type[RouterError] = RouterError,
                  follow: bool = True) -> os.stat_result:
    """``stat`` of ``path``, refusing (one line naming it) anything that is not a regular file: a folder, a FIFO,
    a device or a socket is never opened, so reading can neither block nor touch hardware. ``follow=False``
    also refuses a symbolic link."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        raise _os_error(exc, what, path, error) from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{_named(what, path)} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{_named(what, path)} is {file_kind(st.st_mode)}, not a regular file")
    return st


def _check_place(path, name: str, error: type[RouterError], follow: bool) -> None:
    """Before a no-follow or creating open: no final link (unless ``follow``), an existing parent folder, and
    not a folder."""
    if not follow and os.path.islink(path):
        raise error(f"{name} is a symbolic link; give the real file's path")
    if not os.path.isdir(_parent(path)):
        raise error(f"folder {_parent(path)} for {name} does not exist")
    if os.path.isdir(path):
        raise error(f"{name} is a folder, not a regular file")


def open_fd(path: str | os.PathLike, what: str = "file", error: type[RouterError] = RouterError, *,
            follow: bool = True, flags: int = os.O_RDONLY, fallback_flags: int | None = None, mode: int = 0o644,
            missing_ok: bool = False) -> int | None:
    """The gate as a blocking file descriptor: ``path`` opened with ``flags`` only if it is a regular file.

    The open is non-blocking (a FIFO, even one swapped in after the checks, cannot hang it) and the open file is
    checked again with ``fstat``, so what is read or written is exactly what was checked; blocking mode is then
    restored. With ``follow`` (files the user names) anything ``check_regular`` refuses is refused before the
    open. ``follow=False`` adds ``O_NOFOLLOW`` and refuses a final symbolic link, a missing parent folder and a
    folder first; with ``O_CREAT`` in ``flags`` the file is created (``mode`` minus the umask) if absent.
    ``fallback_flags`` are tried when ``flags`` are refused for lack of permission (a write-only file opened
    read-write). ``missing_ok`` returns None for a file that does not exist instead of refusing it."""
    name = _named(what, path)
    creating = bool(flags & os.O_CREAT)
    writing = bool(flags & _WRITING)
    if missing_ok and not creating and not os.path.lexists(path):
        return None
    if follow and not creating:
        check_regular(path, what, error)
    else:
        _check_place(path, name, error, follow)
    extra = _O_NONBLOCK | _O_ALWAYS | (0 if follow else _O_NOFOLLOW)
    try:
        try:
            fd = os.open(path, flags | extra, mode)
        except PermissionError:
            if fallback_flags is None:
                raise
            fd = os.open(path, fallback_flags | extra, mode)
    except OSError as exc:
        if not follow and os.path.islink(path):  # swapped in after the check above (ELOOP / EMLINK)
            raise error(f"{name} is a symbolic link; give the real file's path") from None
        if missing_ok and not creating and isinstance(exc, FileNotFoundError):
            return None
        raise _os_error(exc, what, path, error, writing, creating) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the check and the open
            raise error(f"{name} is {file_kind(st.st_mode)}, not a regular file")
        if _O_NONBLOCK and fcntl is not None:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | os.PathLike, what: str = "file", error: type[RouterError] = RouterError,
                 follow: bool = True, buffering: int = -1) -> BinaryIO:
    """Open a regular file for binary reading through the gate (``open_fd``): anything else is refused before
    it is opened, and the returned file reads normally."""
    fd = open_fd(path, what, error, follow=follow)
    try:
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path``, with every symbolic link resolved, lies in ``root`` (also resolved)."""
    real, base = Path(path).resolve(), Path(root).resolve()
    return real == base or base in real.parents


# -- writing: atomic, never replacing unless asked --------------------------------------------------------------
def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse early (before any long work) an output that cannot or must not be written."""
    path = Path(path)
    try:
        is_dir, exists = path.is_dir(), os.path.lexists(path)
        parent = path.parent if str(path.parent) else Path(".")
        parent_ok = parent.is_dir()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise RouterError(f"cannot write {path}: {exc.strerror or exc}") from None
    if is_dir:
        raise RouterError(f"{path} is a folder, not a file")
    if exists and not overwrite:
        raise RouterError(f"{path} already exists; pass overwrite to replace it")
    if not parent_ok:
        raise RouterError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise RouterError(f"output folder {parent} is not writable")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], overwrite: bool = False) -> Path:
    """Write ``path`` through ``write(tmp_path)`` and move it into place atomically.

    The temporary file lives in the destination folder. With ``overwrite`` it is renamed over ``path``;
    without, it is hard-linked to ``path``, which fails if anything (a file, a link, a concurrent writer's
    result) is already there, so "create if absent" is one atomic step: of several writers racing for one
    name exactly one wins and the others get "already exists". On any failure (including KeyboardInterrupt
    and ComfyUI's interrupt, which derive from BaseException) the temporary file is removed and ``path`` is
    untouched.
    """
    path = check_writable(path, overwrite)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise RouterError(f"output folder {parent} is not writable ({exc.strerror})") from None
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        write(tmp)
        # mkstemp makes 0600 (and some writers, safetensors among them, recreate the file):
        # a saved file gets the usual mode
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _create(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise RouterError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _create(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` only if nothing is there, atomically (a hard link, then drop the temporary name).
    Where the file system has no hard links, an exclusive create reserves the name and the rename fills it."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise RouterError(f"{path} already exists; pass overwrite to replace it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK,
                             getattr(errno, "ENOSYS", -1)):
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise RouterError(f"{path} already exists; pass overwrite to replace it") from None
        os.replace(tmp, path)
        return
    _remove(tmp)


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


# -- names that stay in their folder -----------------------------------------------------------------------------
def safe_child(folder: str | os.PathLike, name: str, suffix: str = "") -> Path:
    """Return ``folder/name`` (adding ``suffix`` if missing), refusing names that escape it.

    Rejects empty names, absolute paths, ``..`` components, path separators, NUL bytes, names that are not
    valid Unicode and names over ``MAX_NAME_BYTES`` bytes (UTF-8, suffix included).
    """
    if not isinstance(name, str) or not name.strip():
        raise RouterError("name is empty")
    if "\x00" in name:
        raise RouterError("name contains a NUL byte")
    _check_length(name + (suffix if suffix and not name.endswith(suffix) else ""), "name")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise RouterError(f"name {name!r} is an absolute path; give a plain file name")
    parts = name.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts) or len(parts) != 1:
        raise RouterError(f"name {name!r} must be a plain file name without folders or '..'")
    if suffix and not name.endswith(suffix):
        name = name + suffix
    root = Path(folder).resolve()
    target = (root / name).resolve()
    if target.parent != root:
        raise RouterError(f"name {name!r} escapes {root}")
    return target


def _check_length(name: str, what: str) -> None:
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise RouterError(f"{what} {printable(name[:60])!r} is not valid Unicode (it holds a lone surrogate)") from None
    if size > MAX_NAME_BYTES:
        raise RouterError(f"{what} {printable(name[:40])!r}... is {size} bytes long; names may be at most "
                          f"{MAX_NAME_BYTES} bytes (UTF-8)")



def resolve_under(path: str | os.PathLike, roots: list[str | os.PathLike], what: str = "folder") -> Path:
    """Resolve ``path`` (absolute, or relative to the first root) and refuse anything outside ``roots``.

    Symlinks are resolved first, so a link cannot lead out of an allowed root.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise RouterError(f"{what} is empty")
    if "\x00" in str(path):
        raise RouterError(f"{what} contains a NUL byte")
    resolved_roots = [Path(r).resolve() for r in roots]
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [r / p for r in resolved_roots]
    for cand in candidates:
        real = cand.resolve()
        if any(real == r or r in real.parents for r in resolved_roots) and _exists(real):
            return real
    for cand in candidates:
        real = cand.resolve()
        if not any(real == r or r in real.parents for r in resolved_roots):
            raise RouterError(f"{what} {path} is outside the allowed folders {[str(r) for r in resolved_roots]}")
    raise RouterError(f"{what} {path} does not exist under {[str(r) for r in resolved_roots]}")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system, a permission problem on the way
        return False


def child_dir(root: str | os.PathLike, rel: str, create: bool = True) -> Path:
    """``root/rel`` for a relative folder path that must stay inside ``root`` (created if asked)."""
    if not isinstance(rel, str) or not rel.strip():
        raise RouterError("folder name is empty")
    if "\x00" in rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise RouterError(f"folder {rel!r} must be relative to {root}")
    for part in rel.replace("\\", "/").split("/"):
        _check_length(part, "folder name")
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise RouterError(f"folder {rel!r} escapes {base}")
    if create:
        target.mkdir(parents=True, exist_ok=True)
    return target
