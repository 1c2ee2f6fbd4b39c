"""The PNG side of the format: a record travels in a ``cost_aware_router`` text chunk, so an image
saved by the pack describes itself."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

from ..errors import DataError
from ..storage.files import open_regular
from .record import PNG_KEY

MAX_TEXT_CHUNK = 1 << 20  # bytes of one text chunk, stored or inflated (Pillow's PngImagePlugin.MAX_TEXT_CHUNK)
MAX_TEXT_TOTAL = 8 << 20  # bytes of text read from one file
_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_KEY_MAX = 80  # a keyword is 1-79 bytes and a NUL


def _inflate(data: bytes, path, kind: str, key: str) -> bytes:
    """zlib data inflated to at most MAX_TEXT_CHUNK bytes: a small chunk cannot expand into gigabytes."""
    z = zlib.decompressobj()
    try:
        out = z.decompress(data, MAX_TEXT_CHUNK + 1)
    except zlib.error as exc:
        raise DataError(f"{path}: unreadable {kind} chunk ({exc})") from None
    if len(out) > MAX_TEXT_CHUNK or z.unconsumed_tail:
        raise DataError(f"{path}: '{key}' {kind} chunk inflates to more than {MAX_TEXT_CHUNK >> 20} MiB (the limit "
                        "for one text chunk)")
    if not z.eof:
        raise DataError(f"{path}: unreadable {kind} chunk (incomplete or truncated stream)")
    return out


def png_text_chunks(path: Path, keys: set[str] | None = None) -> dict[str, str]:
    """Text chunks (tEXt, zTXt, iTXt) of a PNG file, without decoding the image; with ``keys``, only those
    keywords (the others are skipped unread).

    Bounded whatever the file holds: only a regular file is opened, a text chunk is at most MAX_TEXT_CHUNK
    bytes stored and inflated, and at most MAX_TEXT_TOTAL bytes of text are read from one file."""
    out: dict[str, str] = {}
    total = 0
    with open_regular(path, "", DataError) as fh:
        size = os.fstat(fh.fileno()).st_size
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            raise DataError(f"{path}: not a PNG file")
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            length, ctype = struct.unpack(">I4s", head)
            if ctype == b"IEND":
                break
            if fh.tell() + length + 4 > size:
                raise DataError(f"{path}: truncated PNG chunk")
            if ctype not in _TEXT:
                fh.seek(length + 4, 1)
                continue
            kind = ctype.decode()
            first = fh.read(min(length, _KEY_MAX))
            key = first.partition(b"\x00")[0].decode("latin-1")
            if keys is not None and key not in keys:
                fh.seek(length - len(first) + 4, 1)
                continue
            if length > MAX_TEXT_CHUNK + _KEY_MAX:
                raise DataError(f"{path}: '{key}' {kind} chunk is {length:,} bytes; at most "
                                f"{MAX_TEXT_CHUNK >> 20} MiB are read")
            data = first + fh.read(length - len(first))
            fh.read(4)
            try:
                k, _, rest = data.partition(b"\x00")
                if ctype == b"tEXt":
                    raw = rest
                elif ctype == b"zTXt":
                    raw = _inflate(rest[1:], path, kind, key)
                else:
                    compressed, rest = rest[0], rest[2:]
                    _lang, _, rest = rest.partition(b"\x00")
                    _tr, _, text = rest.partition(b"\x00")
                    raw = _inflate(text, path, kind, key) if compressed else text
                total += len(raw)
                if total > MAX_TEXT_TOTAL:
                    raise DataError(f"{path}: more than {MAX_TEXT_TOTAL >> 20} MiB of text chunks (the limit for one "
                                    "file)")
                out[k.decode("latin-1")] = raw.decode("utf-8" if ctype == b"iTXt" else "latin-1")
            except (UnicodeDecodeError, IndexError) as exc:
                raise DataError(f"{path}: unreadable {kind} chunk ({exc})") from None
    return out


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


def record_text_chunk(record: dict) -> dict[str, str]:
    return {PNG_KEY: json.dumps(record, ensure_ascii=False)}
