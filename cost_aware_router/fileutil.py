"""Safe file handling: atomic writes, refusal to overwrite, names that stay in their folder, reading
only regular files, and text made safe to print on a terminal."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import RouterError

MAX_NAME_BYTES = 200  # an output file or folder name (UTF-8 bytes), suffix included: well under NAME_MAX (255)


# -- reading: regular files only -------------------------------------------------------------------------------
_LOCK = threading.RLock()  # threads of this process (flock is per open file, not per thread)


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if absent, never through a link): threads of this
    process and, through ``flock`` where the platform has it, other processes. For a read-modify-write
    of one file (a held budget's state, a learnt router) by several runs at once."""
    with _LOCK:
        try:
            import fcntl
        except ImportError:  # Windows: the thread lock is all there is
            yield
            return
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                         0o644)
        except OSError as exc:
            raise _os_error(exc, "lock file", lock_path, RouterError) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock


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


def _os_error(exc: OSError, what: str, path, error: type[RouterError]) -> RouterError:
    name = _named(what, path)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return error(f"{name} does not exist")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return error(f"{name} is not readable (permission denied)")
    if exc.errno == errno.ELOOP:
        return error(f"{name} is a symbolic link that cannot be followed")
    if exc.errno == errno.ENXIO:  # a socket, or a FIFO/device without a peer
        return error(f"{name} is not a regular file")
    return error(f"{name} cannot be read ({exc.strerror or exc})")


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


def open_regular(path: str | os.PathLike, what: str = "file", error: type[RouterError] = RouterError,
                 follow: bool = True) -> BinaryIO:
    """Open a regular file for binary reading; anything else is refused before it is opened (``check_regular``).

    The open itself is non-blocking (a FIFO swapped in after the check cannot hang it) and the open file is
    checked again with ``fstat``, so what is read is exactly what was checked; ``follow=False`` adds
    ``O_NOFOLLOW``. The returned file reads normally (blocking mode restored)."""
    check_regular(path, what, error, follow)
    nonblock = getattr(os, "O_NONBLOCK", 0)
    flags = os.O_RDONLY | nonblock | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0) | getattr(
        os, "O_NOCTTY", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _os_error(exc, what, path, error) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # replaced between the check and the open
            raise error(f"{_named(what, path)} is {file_kind(st.st_mode)}, not a regular file")
        if nonblock:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~nonblock)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path``, with every symbolic link resolved, lies in ``root`` (also resolved)."""
    real, base = Path(path).resolve(), Path(root).resolve()
    return real == base or base in real.parents


# -- printing text that came from files ------------------------------------------------------------------------
_HIDDEN = {0x061C, 0x200B, 0x200E, 0x200F, 0xFEFF, *range(0x202A, 0x202F), *range(0x2060, 0x2065),
           *range(0x2066, 0x206A), *range(0xFFF9, 0xFFFC)}
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def bounded_lines(fh, limit: int):
    """(line number, bytes) of each line of a binary file, holding at most ``limit`` bytes of a line at a
    time; a longer line comes back as None once the rest of it has been read past, never held whole."""
    lineno = 0
    while True:
        raw = fh.readline(limit + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(limit)
            yield lineno, None
        else:
            yield lineno, raw


def _finite(value):
    """A copy of ``value`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_text(value, ascii_only: bool = False) -> str:
    """``value`` as one line of strict JSON for a terminal or a pipe: every number finite (a non-finite
    one is null), and DEL, C1 controls, lone surrogates, line and paragraph separators and bidirectional
    controls written as ``\\u`` escapes (C0 controls always are); ``ascii_only`` escapes every
    non-ASCII character. What the ``--json`` outputs print."""
    text = json.dumps(_finite(value), ensure_ascii=ascii_only, allow_nan=False)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text, newlines: bool = False) -> str:
    """``text`` safe to write to a terminal: control characters (C0 including ESC, DEL, C1), line and paragraph
    separators, bidirectional overrides and isolates, invisible formatting characters and lone surrogates are
    shown as escapes (``\\x1b``, ``\\u202e``, ``\\n``); everything else, emoji and accents included, is kept.
    ``newlines`` keeps ``\\n`` as a line break (for text of several lines the program itself composed)."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        o = ord(ch)
        if newlines and ch == "\n":
            out.append(ch)
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        elif o < 0x20 or 0x7F <= o <= 0x9F or o in _HIDDEN or unicodedata.category(ch) in ("Zl", "Zp", "Cs"):
            out.append(f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


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


def split_prompts(text: str, clean: bool = False) -> list[str]:
    """The non-blank lines of ``text``, one prompt each. Lines end at \\n, \\r\\n or \\r only (not at
    form feed, vertical tab, U+0085 or U+2028, which may sit inside a prompt). ``clean`` strips each
    prompt and keeps the first of repeated ones (collection runs each distinct prompt once);
    otherwise lines come back as written (routing answers every line)."""
    lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line.strip()]
    return list(dict.fromkeys(line.strip() for line in lines)) if clean else lines


def read_prompts(path: str | os.PathLike, what: str = "prompts file", clean: bool = False) -> list[str]:
    """The prompts of a UTF-8 text file (a leading byte-order mark is dropped), one per line
    (``split_prompts``), with clear errors."""
    with open_regular(path, what) as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RouterError(f"{what} {path} is not valid UTF-8 (byte {exc.start})") from None
    return split_prompts(text, clean)


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
