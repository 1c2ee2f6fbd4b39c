"""Writing a scored-generations folder safely: one atomic step per generation, resumable.

Each ``add`` writes the PNG (its record in a ``cost_aware_router`` text chunk) with a temp file and
a rename, then rewrites ``generations.jsonl`` with the new row the same way. A crash or interrupt
at any point loses no earlier row and leaves no half row; if it falls between the two renames the
PNG still describes itself and the reader counts it. Adding a (prompt, candidate, seed) triple that
is already there is skipped, so a rerun of a sweep resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from ..fileutil import atomic_write
from .dataset import read_records
from .record import JSONL_NAME, parse_record

_LOCK = threading.Lock()


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """Serialise writers of one folder (threads here, processes through flock where available)."""
    with _LOCK:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the thread lock is all there is
            yield
            return
        with open(folder / ".generations.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "x"


class GenerationStore:
    def __init__(self, folder: str | Path, create: bool = True):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"{self.folder} is a file, not a folder")
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
        elif not self.folder.is_dir():
            raise DataError(f"{self.folder} does not exist")

    @property
    def jsonl(self) -> Path:
        return self.folder / JSONL_NAME

    def keys(self) -> set[tuple[str, str, object]]:
        """(prompt, candidate, seed) of every record already in the folder."""
        try:
            records, _ = read_records(self.folder)
        except DataError as exc:
            if "holds no scored generations" in str(exc):
                return set()
            raise
        return {(r.prompt, r.candidate, r.extra.get("seed")) for r in records}

    def add(self, record: dict, render: Callable[[dict], bytes] | None = None) -> dict | None:
        """Add one generation; ``render(record) -> PNG bytes`` embeds the final record. Returns the
        record written, or None when the (prompt, candidate, seed) triple is already there."""
        record = {k: v for k, v in record.items() if v is not None}
        parse_record(record, "new record")  # validate before touching anything
        with _folder_lock(self.folder):
            if (record["prompt"], record["candidate"].strip(), record.get("seed")) in self.keys():
                return None
            old = self.jsonl.read_bytes() if self.jsonl.exists() else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            if render is not None:
                n = old.count(b"\n")
                stem = f"{_slug(record['candidate'])}_{_slug(str(record.get('seed', 'x')))}.png"
                while (self.folder / f"{n:06d}_{stem}").exists():
                    n += 1
                name = f"{n:06d}_{stem}"
                record = {**record, "image": name}
                data = render(record)
                atomic_write(self.folder / name, lambda tmp: Path(tmp).write_bytes(data))
            line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            atomic_write(self.jsonl, lambda tmp: Path(tmp).write_bytes(old + line), overwrite=True)
        return record


def write_jsonl_rows(path: Path, rows: list[dict]) -> None:
    """Write rows as JSON Lines (used by the table converters and tests)."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
