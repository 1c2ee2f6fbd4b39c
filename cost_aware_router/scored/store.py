"""Writing a scored-generations folder: one append per generation, safe with many writers, resumable.

``GenerationStore.add`` does, for one generation:

1. render the PNG (its record in a ``cost_aware_router`` text chunk) into a temporary file in the
   folder and fsync it, without holding any lock;
2. take the folder's lock (``storage.lines.exclusive`` on ``.generations.lock``, opened without
   following a symbolic link), read what other writers appended to ``generations.jsonl`` since this store
   last looked, and give up (removing the temporary file) if the (prompt, candidate, seed) triple is
   already there;
3. rename the PNG into place (its name carries a random token, so writers never collide), then
   append the row with the pack's one locked append (``storage.lines.append_lines``: a single
   ``write`` on an ``O_APPEND`` descriptor, prefixed with a newline if a killed writer left the file
   without one).

The cost of a write does not grow with the folder: the resume index, the (prompt, candidate, seed)
keys, is read once per store (rows and self-describing PNGs) and afterwards only the bytes
appended since are parsed, with the folder reader's bounded line reader (``storage.lines.bounded_lines``
at ``MAX_ROW_BYTES``): a longer row is skipped and counted in ``oversized_rows`` without being held,
so memory stays bounded whatever a row holds. Several processes, on one machine or on several machines sharing a
filesystem with working ``flock`` (local filesystems, NFSv4, Lustre, GPFS...), may write one folder
at once: the check and the append happen under the lock, so no row is lost, duplicated or torn.
A crash at any point loses no earlier row: before the rename only a ``.*.tmp`` file exists (the
reader ignores it and a store opened later removes it after an hour); between the rename and the
append the PNG describes itself, so the reader counts it and a rerun skips it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError, RouterError
from ..storage.files import child_dir, open_fd
from ..storage.lines import append_lines, bounded_lines, exclusive
from .dataset import MAX_ROW_BYTES, read_png_records
from .record import JSONL_NAME, parse_record

LOCK_NAME = ".generations.lock"
STALE_TMP_SECONDS = 3600.0  # a temporary file this old belongs to a writer that was killed

_REGISTRY = threading.Lock()  # guards _OPEN


def folder_lock(folder: Path):
    """Serialise the writers of one folder: threads of this process, and processes (on this machine
    or on others sharing the filesystem) through ``flock`` on the folder's lock file."""
    return exclusive(folder / LOCK_NAME, "lock file", DataError, mode=0o666)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "x"


def record_key(obj: dict) -> tuple | None:
    """The (prompt, candidate, seed) a row stands for, or None for a row the reader would refuse."""
    try:
        rec = parse_record(obj, "row")
        key = (rec.prompt, rec.candidate, rec.extra.get("seed"))
        hash(key)
    except (DataError, TypeError):
        return None
    return key


def store_folder(root: str | os.PathLike, rel: str, create: bool = True) -> Path:
    """``root/rel`` for a save folder: a dedicated folder inside ``root``, never ``root`` itself
    (a store reads its whole folder once, and a folder shared with other outputs is not a dataset)."""
    if not isinstance(rel, str) or not rel.strip():
        raise RouterError(f"the save folder is empty: name a dedicated folder inside {root}")
    target = child_dir(root, rel, create=False)
    if target == Path(root).resolve():
        raise RouterError(f"folder {rel!r} is {root} itself: name a dedicated folder inside it, "
                          "e.g. 'scored_generations'")
    if create:
        target.mkdir(parents=True, exist_ok=True)
    return target


def remove_stale_temporaries(folder: Path, older_than: float = STALE_TMP_SECONDS) -> int:
    """Remove ``.*.tmp`` files (regular files, not links) left by killed writers; returns how many."""
    removed = 0
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed


class GenerationStore:
    """A scored-generations folder being written. Keep one per folder and process (``open_store``):
    its resume index is read once and then followed incrementally."""

    def __init__(self, folder: str | Path, create: bool = True):
        self.folder = Path(folder)
        self.create = create
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"{self.folder} is a file, not a folder")
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
        elif not self.folder.is_dir():
            raise DataError(f"{self.folder} does not exist")
        self._mutex = threading.RLock()  # guards the index below (innermost lock)
        self._keys: set[tuple] = set()
        self._offset = 0  # bytes of generations.jsonl already parsed (always at a line end)
        self.oversized_rows = 0  # rows over MAX_ROW_BYTES skipped by the index (the reader refuses them too)
        self._ident: tuple | None = None  # (device, inode) of the file those bytes came from
        self._built = False
        self.removed_temporaries = remove_stale_temporaries(self.folder)

    @property
    def jsonl(self) -> Path:
        return self.folder / JSONL_NAME

    # -- the resume index ------------------------------------------------------------------
    def _build(self) -> None:
        self._keys, self._offset, self._ident, self.oversized_rows = set(), 0, None, 0
        images: set[str] = set()
        self._follow(images)
        if self.folder.is_dir():  # PNGs no row names: written by a process killed before its row
            recs, _ = read_png_records(self.folder, images, skip_bad=True)
            self._keys.update((r.prompt, r.candidate, r.extra.get("seed")) for r in recs)
        self._built = True

    def _follow(self, images: set[str] | None = None) -> None:
        """Parse the complete lines appended to generations.jsonl since the last call."""
        fd = open_fd(self.jsonl, "", DataError, follow=False, missing_ok=True)  # a FIFO is refused, never hangs
        if fd is None:
            if self._ident is not None:  # the file was removed: start again
                self._build()
            return
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if self._ident is not None and (ident != self._ident or st.st_size < self._offset):
                fh.close()
                self._build()  # replaced or truncated by something else: read it all again
                return
            self._ident = ident
            if st.st_size > self._offset:
                fh.seek(self._offset)
                self._read_rows(fh, images)

    def _read_rows(self, fh, images: set[str] | None) -> None:
        """Index the complete rows from ``fh``'s position on, with the folder reader's bounded line reader:
        a row over ``MAX_ROW_BYTES`` is skipped (and counted in ``oversized_rows``) without being held; a
        last line without its newline is still being written (or torn) and is left for the next call."""
        for _, raw in bounded_lines(fh, MAX_ROW_BYTES):
            end = fh.tell()
            if raw is None:  # over the limit: read past, never held
                if os.pread(fh.fileno(), 1, end - 1) != b"\n":
                    return  # ... and not finished yet
                self.oversized_rows += 1
            elif not raw.endswith(b"\n"):
                return
            elif raw.strip():
                self._index_row(raw, images)
            self._offset = end

    def _index_row(self, raw: bytes, images: set[str] | None) -> None:
        try:
            obj = json.loads(raw)
            key = record_key(obj)
        except (ValueError, RecursionError):  # torn, malformed or nested too deeply: the reader reports it
            return  # it does not count as done
        if key is not None:
            self._keys.add(key)
            if images is not None and isinstance(obj.get("image"), str):
                images.add(obj["image"])

    def refresh(self) -> None:
        """Bring the index up to date: the whole folder the first time, then only what was appended."""
        with self._mutex:
            if not self._built:
                self._build()
            else:
                self._follow()

    def keys(self) -> set[tuple[str, str, object]]:
        """(prompt, candidate, seed) of every record in the folder (rows and self-describing PNGs)."""
        with self._mutex:
            self.refresh()
            return set(self._keys)

    def __contains__(self, key: tuple) -> bool:
        with self._mutex:
            self.refresh()
            return key in self._keys

    def count(self, keys) -> int:
        """How many of ``keys`` the folder holds."""
        with self._mutex:
            self.refresh()
            return sum(1 for k in keys if k in self._keys)

    # -- writing -------------------------------------------------------------------------
    def _temp_png(self, name: str, data: bytes) -> str:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.folder)
        except OSError as exc:
            raise RouterError(f"output folder {self.folder} is not writable ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved image gets the usual mode
        except BaseException:
            _unlink(tmp)
            raise
        return tmp

    def add(self, record: dict, render: Callable[[dict], bytes] | None = None) -> dict | None:
        """Add one generation; ``render(record) -> PNG bytes`` embeds the final record. Returns the
        record written, or None when the (prompt, candidate, seed) triple is already there."""
        record = {k: v for k, v in record.items() if v is not None}
        parse_record(record, "new record")  # validate before touching anything
        key = (record["prompt"], record["candidate"].strip(), record.get("seed"))
        if key in self:  # cheap check without the folder lock; repeated under it below
            return None
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
        tmp = name = None
        try:
            if render is not None:
                name = f"{_slug(record['candidate'])}_{_slug(str(record.get('seed', 'x')))}_{secrets.token_hex(6)}.png"
                record = {**record, "image": name}
                tmp = self._temp_png(name, render(record))
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            with folder_lock(self.folder), self._mutex:
                self.refresh()
                if key in self._keys:
                    return None
                if tmp is not None:
                    final = self.folder / name
                    if final.exists() or final.is_symlink():
                        raise RouterError(f"{final} already exists")
                    os.replace(tmp, final)
                    tmp = None
                append_lines(self.jsonl, line, "", DataError, mode=0o666)
                self._keys.add(key)
                self._follow()  # our own line (and the file's identity, if we just created it)
        except BaseException:
            # interrupted part-way (or another program wrote meanwhile): read the folder afresh next time
            with self._mutex:
                self._built = False
            raise
        finally:
            if tmp is not None:
                _unlink(tmp)
        return record


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


_OPEN: dict[Path, GenerationStore] = {}


def open_store(folder: str | Path, create: bool = True) -> GenerationStore:
    """The process-wide store of ``folder`` (one resume index per folder, followed incrementally):
    what the ComfyUI nodes use, since they run once per generation."""
    path = Path(folder).resolve()
    with _REGISTRY:
        store = _OPEN.get(path)
    if store is not None and path.is_dir():
        return store
    store = GenerationStore(path, create=create)
    with _REGISTRY:
        _OPEN[path] = store
    return store


def jsonl_bytes(rows: list[dict]) -> bytes:
    """Rows as the bytes of a JSON Lines file (UTF-8, one row per line)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def write_jsonl_rows(path: Path, rows: list[dict]) -> None:
    """Write rows as JSON Lines (used by the table converters and tests)."""
    Path(path).write_bytes(jsonl_bytes(rows))
