"""The one prompt-file reader: a UTF-8 text file, one prompt per line."""

from __future__ import annotations

import os

from ..errors import RouterError
from .files import open_regular


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
