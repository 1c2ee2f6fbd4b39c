"""The PNG side of the format: a record travels in a ``cost_aware_router`` text chunk, so an image
saved by the pack describes itself."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

from ..errors import DataError
from .record import PNG_KEY


def png_text_chunks(path: Path) -> dict[str, str]:
    """Text chunks (tEXt, zTXt, iTXt) of a PNG file, without decoding the image."""
    out: dict[str, str] = {}
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            raise DataError(f"{path}: not a PNG file")
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            length, ctype = struct.unpack(">I4s", head)
            if ctype == b"IDAT" or ctype == b"IEND":
                if ctype == b"IEND":
                    break
                fh.seek(length + 4, 1)
                continue
            data = fh.read(length)
            fh.read(4)
            if len(data) < length:
                raise DataError(f"{path}: truncated PNG chunk")
            try:
                if ctype == b"tEXt":
                    k, _, v = data.partition(b"\x00")
                    out[k.decode("latin-1")] = v.decode("latin-1")
                elif ctype == b"zTXt":
                    k, _, v = data.partition(b"\x00")
                    out[k.decode("latin-1")] = zlib.decompress(v[1:]).decode("latin-1")
                elif ctype == b"iTXt":
                    k, _, rest = data.partition(b"\x00")
                    compressed, rest = rest[0], rest[2:]
                    _lang, _, rest = rest.partition(b"\x00")
                    _tr, _, text = rest.partition(b"\x00")
                    out[k.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
            except (zlib.error, UnicodeDecodeError, IndexError) as exc:
                raise DataError(f"{path}: unreadable {ctype.decode()} chunk ({exc})") from None
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
