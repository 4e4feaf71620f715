"""Secrets out of vendor text: every spelling of each secret, and any piece of one, before anything else."""

import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

# A piece this long of a secret is recognisable (a prefix left by a cut, a suffix); shorter is noise.
PIECE_CHARS = 4
MASK = "***"
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


class Redactor:
    """Masks the secrets it was given in any text, in every spelling a vendor's echo may use."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in _spellings(secret)}
        # Forms shorter than a piece are looked for whole; longer ones are covered by their pieces.
        self._whole = sorted(form for form in forms if len(form) < PIECE_CHARS)
        self._pieces = {
            form[start : start + PIECE_CHARS]
            for form in forms
            for start in range(len(form) - PIECE_CHARS + 1)
        }

    def text(self, text: str) -> str:
        """The text with every secret, and every piece of one, masked."""
        return _render(text, self._masked(text), len(text))

    def excerpt(self, body: bytes, chars: int) -> str:
        """The first `chars` characters of a body, masked before it is cut, so no cut can halve a secret."""
        # Whether a character is masked depends on its PIECE_CHARS - 1 neighbours each side only: read that
        # much more than shown (UTF-8 needs at most 4 bytes a character), and drop those last characters,
        # whose right-hand neighbours the read cut off.
        window = body[: (chars + PIECE_CHARS - 1) * 4]
        text = window.decode("utf-8", errors="replace")
        end = len(text) - (PIECE_CHARS - 1) if len(window) < len(body) else len(text)
        return _render(text, self._masked(text), end)[:chars]

    def _masked(self, text: str) -> bytearray:
        masked = bytearray(len(text))
        for form in self._whole:
            start = text.find(form)
            while start >= 0:
                masked[start : start + len(form)] = b"\1" * len(form)
                start = text.find(form, start + 1)
        if self._pieces:
            for start in range(len(text) - PIECE_CHARS + 1):
                if text[start : start + PIECE_CHARS] in self._pieces:
                    masked[start : start + PIECE_CHARS] = b"\1" * PIECE_CHARS
        return masked


def _render(text: str, masked: bytearray, end: int) -> str:
    parts: list[str] = []
    position = 0
    while position < end:
        start = masked.find(1, position, end)
        if start < 0:
            parts.append(text[position:end])
            break
        parts.append(text[position:start] + MASK)
        position = masked.find(0, start, end)
        if position < 0:
            break
    return "".join(parts)


def _spellings(secret: str) -> set[str]:
    """The secret as it may come back: raw, JSON-escaped (once, or twice when echoed inside a JSON string),
    URL-encoded (either case of hex), HTML-escaped, as a Python repr."""
    json_once = {_json_escaped(secret, ascii_only) for ascii_only in (True, False)}
    url = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    url |= {_PERCENT_ESCAPE.sub(lambda escape: escape.group().lower(), form) for form in url}
    return {
        secret,
        *json_once,
        *(_json_escaped(form, ascii_only) for form in json_once for ascii_only in (True, False)),
        *url,
        html.escape(secret),
        html.escape(secret, quote=False),
        repr(secret)[1:-1],
    }


def _json_escaped(text: str, ascii_only: bool) -> str:
    return json.dumps(text, ensure_ascii=ascii_only)[1:-1]
