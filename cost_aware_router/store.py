"""Writing a scored-generations folder safely: one atomic step per generation, resumable.

Each ``add`` writes the PNG (its record in a ``cost_aware_router`` text chunk) with a temp file and
a rename, then rewrites ``generations.jsonl`` with the new row the same way. A crash or interrupt
at any point loses no earlier row and leaves no half row; if it falls between the two renames the
PNG still describes itself and the reader counts it. Adding a (prompt, candidate, seed) triple that
is already there is skipped, so a rerun of a sweep resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path

from .data import JSONL_NAME, PNG_KEY, parse_record, read_records
from .errors import DataError
from .fileutil import atomic_write

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


def png_bytes(image, text: dict[str, str]) -> bytes:
    """Encode a PIL image (or HxWx3 array in 0..1 or 0..255) as PNG with text chunks."""
    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    if not isinstance(image, Image.Image):
        arr = np.asarray(image, dtype=np.float32)
        if arr.max() <= 1.0 + 1e-6:
            arr = arr * 255.0
        image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    info = PngInfo()
    for k, v in text.items():
        if v.isascii():
            info.add_text(k, v)
        else:
            info.add_itxt(k, v)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=4)
    return buf.getvalue()


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


def generation_record(prompt: str, candidate: str, score: float, cost: float, metric: str, seed, checkpoint: str,
                      steps: int, cfg: float, sampler: str | None = None, scheduler: str | None = None,
                      **extra) -> dict:
    """The one record layout both writers use (the ComfyUI save node and the headless collector)."""
    return {"prompt": prompt, "candidate": candidate, "score": float(score), "cost": float(cost),
            "scores": {metric or "score": float(score)}, "seed": seed, "checkpoint": checkpoint, "steps": int(steps),
            "cfg": float(cfg), "sampler": sampler, "scheduler": scheduler, **extra}


RECORD_KEYS = frozenset(generation_record("p", "c", 0.0, 0.0, "m", 0, "ckpt", 1, 1.0, "s", "s", measured_seconds=0.0,
                                          size="0x0")) | {"image"}


def record_text_chunk(record: dict) -> dict[str, str]:
    return {PNG_KEY: json.dumps(record, ensure_ascii=False)}
