"""Judging a body's timestamps: an offset that carries it out of range in UTC quarantines it, others pass."""

import json

import pytest

from relay.bringg.payload import judge


def body(**rating: str | None) -> bytes:
    fields = {"id": 1, "rating": 4, "task": {"external_id": "INQ-1"}, **rating}
    return json.dumps({"webhook_type": "rating_submitted", "merchant_id": 7, "rating": fields}).encode()


@pytest.mark.parametrize("name", ["created_at", "updated_at"])
@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
def test_a_time_its_offset_carries_out_of_range_in_utc_is_quarantined(name, moment):
    judgement = judge(body(**{name: moment}))

    assert judgement.status == "quarantined"
    assert f"rating.{name}: out of range once converted to UTC" in judgement.errors


@pytest.mark.parametrize(
    "moment",
    ["2026-11-01T10:00:00Z", "2026-11-01T10:00:00", "2026-11-01T10:00:00+02:00", "0001-01-01T00:00:00Z"],
)
def test_a_time_in_range_in_utc_is_accepted_whatever_its_offset(moment):
    judgement = judge(body(created_at=moment, updated_at=moment))

    assert (judgement.status, judgement.errors) == ("accepted", ())
    assert judgement.rating is not None and judgement.rating.updated_at is not None
    assert judgement.rating.updated_at.utcoffset() is not None
