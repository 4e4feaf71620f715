"""Judging every body of a wide corpus as the judge of da6fd7d did (tests/judgements.jsonl recorded it).

The corpus: the vendor's examples, a rating with each field in turn missing or swapped for an odd value,
pairs of odd fields, other webhook types, and bytes that are no JSON object. `python -m
tests.test_payload_judgements` writes the file anew from the judge of the day, for a rule meant to change.
"""

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from relay.bringg.payload import judge
from relay.domain.judgement import Judgement
from relay.domain.rating import Rating
from tests.conftest import FIXTURES

RECORDED = Path(__file__).resolve().parent / "judgements.jsonl"
MISSING = object()
ODD: list[Any] = [
    None, True, False, 0, -1, 6, 3.0, 2.5, 1e308, 2**63 - 1, 2**63, -(2**63), "", "4", "x", " 3 ", "a\x00b",
    "\ud800", [], [1], {}, "2026-11-01T10:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00",
    "2026-11-01", "2099-01-01T00:00:00Z", "2026-11-01T10:00:00+14:00", 1700000000, "x" * 201, "y" * 70,
    "task_created",
]  # fmt: skip
RATING = {
    "webhook_type": "rating_submitted",
    "merchant_id": 7,
    "rating": {
        "id": 3452,
        "rating": 4,
        "comment": "ok",
        "created_at": "2022-07-20T12:01:30.191Z",
        "updated_at": None,
        "task": {"id": 345623, "status": 1, "title": "pickup", "external_id": "12443523", "way": [{"id": 1}]},
        "rating_reasons": [{"text": "Driver"}, {"text": "Ease"}],
        "extra": {"deep": [1, 2]},
    },
}
PATHS: list[tuple[str | int, ...]] = [
    ("webhook_type",), ("merchant_id",), ("rating",), ("rating", "id"), ("rating", "rating"),
    ("rating", "comment"), ("rating", "created_at"), ("rating", "updated_at"), ("rating", "task"),
    ("rating", "task", "id"), ("rating", "task", "status"), ("rating", "task", "title"),
    ("rating", "task", "external_id"), ("rating", "rating_reasons"), ("rating", "rating_reasons", 0),
    ("rating", "rating_reasons", 0, "text"),
]  # fmt: skip
ODD_BYTES = [
    b"", b" ", b"null", b"[]", b"[1]", b"1", b'"x"', b"{", b"\xff\xfe", b"{}", b'{"a":1}', b"\x00",
    b"[" * 300 + b"]" * 300, b"\xef\xbb\xbf{}",
    b'{"webhook_type": "rating_submitted", "webhook_type": "task_created"}',
    b'{"merchant_id":1,"merchant_id":"x","webhook_type":"rating_submitted","rating":{"id":1,"rating":3}}',
    b'{"webhook_type":"rating_submitted","merchant_id":7,"rating":{"id":1,"rating":3,"rating":4}}',
    b'{"webhook_type":"rating_submitted","merchant_id":7,"rating":{"id":1,"rating":3}} trailing',
    b'{"webhook_type":"rating_submitted","merchant_id":7,"rating":{"id":1,"rating":3,"comment":"\xff"}}',
    b'{"webhook_type":"rating_submitted","merchant_id":7,"rating":{"id":1e2,"rating":3.0}}',
    b'{"webhook_type":"rating_submitted","merchant_id":7,"rating":{"id":1,"rating":NaN}}',
    b'{"webhook_type":"rating_submitted","merchant_id":7,"rating":{"id":1,"rating":3,"created_at":1.5e9}}',
    b'{"webhook_type":12,"merchant_id":7}', b'{"webhook_type":"x\\u0000y","merchant_id":7}',
]  # fmt: skip


def _put(document: Any, path: tuple[str | int, ...], value: Any) -> Any:
    document = copy.deepcopy(document)
    node = document
    for step in path[:-1]:
        node = node[step]
    if value is MISSING:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return document


def _encoded(document: Any) -> bytes:
    return json.dumps(document).encode("utf-8", "surrogatepass")  # a lone surrogate goes as its bytes


def corpus() -> list[bytes]:
    """About 800 bodies, the same at every run."""
    bodies = [path.read_bytes() for path in sorted((FIXTURES / "bringg").iterdir())]
    bodies.append(_encoded(RATING))
    for path in PATHS:
        bodies += [_encoded(_put(RATING, path, value)) for value in [MISSING, *ODD]]
    for first, second in itertools.combinations(PATHS[:8], 2):
        for pair in [(None, None), ("x", True), (MISSING, "x"), (MISSING, MISSING), (2**63, -1)]:
            if second[: len(first)] != first:  # not a field inside one already swapped
                bodies.append(_encoded(_put(_put(RATING, first, pair[0]), second, pair[1])))
    for webhook_type in ["rating_submitted", "task_created", None, 5, "z" * 100, "a\x00"]:
        for merchant_id in [7, None, "7", True, -1, 2**63, 3.0]:
            envelope = {"webhook_type": webhook_type, "merchant_id": merchant_id}
            bodies += [
                _encoded(envelope),
                _encoded({**envelope, "rating": "bad"}),
                _encoded({**envelope, "rating": {"id": 1, "rating": 9}}),
            ]
    reasons = [[{"text": n} for n in range(101)], [1, None, {"text": None}, {"text": ""}, {"text": 3}, "s"]]
    bodies += [_encoded(_put(RATING, ("rating", "rating_reasons"), value)) for value in reasons]
    return bodies + ODD_BYTES


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def recorded_as(body: bytes, judgement: Judgement) -> list[Any]:
    """A line of the file: the body's digest, the judgement, its rating by the digest of the stored JSON."""
    rating = None if judgement.rating is None else _digest(judgement.rating.model_dump_json().encode())
    status, webhook_type, merchant_id, rating_id = (
        judgement.status,
        judgement.webhook_type,
        judgement.merchant_id,
        judgement.rating_id,
    )
    return [_digest(body), status, webhook_type, merchant_id, rating_id, list(judgement.errors), rating]


def test_every_body_is_judged_as_recorded():
    recorded = [json.loads(line) for line in RECORDED.read_text().splitlines()]
    bodies = corpus()

    assert [entry[0] for entry in recorded] == [_digest(body) for body in bodies]
    differing = [
        (body[:120], entry, now)
        for body, entry in zip(bodies, recorded, strict=True)
        if (now := recorded_as(body, judge(body))) != entry
    ]
    assert differing == []


def test_every_accepted_rating_is_the_one_validating_its_values_gives():
    ratings = [judgement.rating for body in corpus() if (judgement := judge(body)).rating is not None]
    differing = []
    for rating in ratings:
        validated = Rating.model_validate(dict(rating))
        if (
            rating != validated
            or [type(value) for _, value in rating] != [type(value) for _, value in validated]
            or (rating.model_fields_set, rating.model_extra)
            != (validated.model_fields_set, validated.model_extra)
            or rating.__pydantic_private__ != validated.__pydantic_private__
            or rating.model_dump_json() != validated.model_dump_json()
        ):
            differing.append((rating, validated))

    assert len(ratings) > 100
    assert differing == []


@pytest.mark.parametrize("status", ["accepted", "ignored", "quarantined"])
def test_the_corpus_holds_each_outcome(status):
    assert any(judge(body).status == status for body in corpus())


if __name__ == "__main__":
    lines = [json.dumps(recorded_as(body, judge(body)), separators=(",", ":")) for body in corpus()]
    RECORDED.write_text("\n".join(lines) + "\n")
