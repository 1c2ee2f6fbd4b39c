"""Text that came from files, made safe for a terminal or a pipe: ``printable`` escapes control and
invisible characters, ``json_text`` writes one line of strict JSON."""

from __future__ import annotations

import json
import math
import re
import unicodedata

_HIDDEN = {0x061C, 0x200B, 0x200E, 0x200F, 0xFEFF, *range(0x202A, 0x202F), *range(0x2060, 0x2065),
           *range(0x2066, 0x206A), *range(0xFFF9, 0xFFFC)}
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


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
