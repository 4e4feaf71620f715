"""Redaction of vendor text: each spelling of a secret, and any piece of one, masked before any cut."""

import html
import json
from urllib.parse import quote, quote_plus

import pytest

from relay.quivo.redact import Redactor

SECRET = 'pa  ss"wo\\rd-é/+'


@pytest.mark.parametrize(
    "spelling",
    [
        SECRET,
        json.dumps(SECRET)[1:-1],
        json.dumps(SECRET, ensure_ascii=False)[1:-1],
        json.dumps(json.dumps(SECRET))[3:-3],
        json.dumps(json.dumps(SECRET, ensure_ascii=False), ensure_ascii=False)[3:-3],
        quote(SECRET, safe=""),
        quote(SECRET, safe="").lower(),
        quote_plus(SECRET),
        html.escape(SECRET),
    ],
)
def test_every_spelling_is_masked_where_it_stands(spelling: str) -> None:
    assert Redactor([SECRET]).text(f"before {spelling} after") == "before *** after"


def test_a_piece_left_by_someone_elses_cut_is_masked() -> None:
    redactor = Redactor(["hunter2-secret"])

    assert redactor.text('{"password": "hunter2-se…"}') == '{"password": "***…"}'
    assert redactor.text("…cret and more") == "…*** and more"


def test_text_without_secrets_is_unchanged() -> None:
    assert Redactor(["hunter2-secret", ""]).text("Unauthorized: no such user") == "Unauthorized: no such user"


def test_an_excerpt_masks_before_cutting_so_no_cut_leaves_a_piece() -> None:
    secret = "".join(f"{n:03d}q" for n in range(150))
    redactor = Redactor([secret])
    body = b"x" * 190 + secret.encode() + b"y" * 5000

    assert redactor.excerpt(body, 200) == "x" * 190 + "***" + "y" * 7


def test_an_excerpt_drops_a_secret_cut_by_its_own_read_window() -> None:
    secret = "abcdefghij"
    # The excerpt reads (20 + 3) * 4 bytes: 9 + 8 secrets whole, then "abc", too short to be seen as a piece.
    body = b"z" * 9 + secret.encode() * 50 + b"k" * 100

    assert Redactor([secret]).excerpt(body, 20) == "z" * 9 + "***"
