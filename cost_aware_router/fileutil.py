"""Safe file handling: atomic writes, refusal to overwrite, names that stay in their folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import RouterError


def check_writable(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse early (before any long work) an output that cannot or must not be written."""
    path = Path(path)
    if path.is_dir():
        raise RouterError(f"{path} is a folder, not a file")
    if path.exists() and not overwrite:
        raise RouterError(f"{path} already exists; pass overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise RouterError(f"output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise RouterError(f"output folder {parent} is not writable")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], overwrite: bool = False) -> Path:
    """Write ``path`` through ``write(tmp_path)`` and rename into place.

    The temporary file lives in the destination folder so the rename is atomic. On any
    failure (including KeyboardInterrupt and ComfyUI's interrupt, which derive from
    BaseException) the temporary file is removed and ``path`` is untouched.
    """
    path = check_writable(path, overwrite)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
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
        if path.exists() and not overwrite:  # someone else wrote it meanwhile
            raise RouterError(f"{path} already exists; pass overwrite to replace it")
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise RouterError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def safe_child(folder: str | os.PathLike, name: str, suffix: str = "") -> Path:
    """Return ``folder/name`` (adding ``suffix`` if missing), refusing names that escape it.

    Rejects empty names, absolute paths, ``..`` components, path separators and NUL bytes.
    """
    if not isinstance(name, str) or not name.strip():
        raise RouterError("name is empty")
    if "\x00" in name:
        raise RouterError("name contains a NUL byte")
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
    path = Path(path)
    if path.is_dir():
        raise RouterError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise RouterError(f"{what} {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
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
        if any(real == r or r in real.parents for r in resolved_roots) and real.exists():
            return real
    for cand in candidates:
        real = cand.resolve()
        if not any(real == r or r in real.parents for r in resolved_roots):
            raise RouterError(f"{what} {path} is outside the allowed folders {[str(r) for r in resolved_roots]}")
    raise RouterError(f"{what} {path} does not exist under {[str(r) for r in resolved_roots]}")


def child_dir(root: str | os.PathLike, rel: str, create: bool = True) -> Path:
    """``root/rel`` for a relative folder path that must stay inside ``root`` (created if asked)."""
    if not isinstance(rel, str) or not rel.strip():
        raise RouterError("folder name is empty")
    if "\x00" in rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise RouterError(f"folder {rel!r} must be relative to {root}")
    base = Path(root).resolve()
    target = (base / rel).resolve()
    if target != base and base not in target.parents:
        raise RouterError(f"folder {rel!r} escapes {base}")
    if create:
        target.mkdir(parents=True, exist_ok=True)
    return target
