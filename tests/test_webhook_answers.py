"""The webhook's answers, byte for byte: spelled as json.dumps spells them, whatever builds them."""

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.app import create_app
from tests.conftest import AUTH, BACKENDS
from tests.test_webhook import rating_body

pytestmark = pytest.mark.backends(*BACKENDS)
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def relay(aiohttp_client, make_settings):
    return await aiohttp_client(create_app(make_settings(), run_worker=False))


async def answer_of(client: Client, body: bytes) -> tuple[int, str, bytes]:
    response = await client.post("/webhooks/bringg", data=body, headers=AUTH)
    return response.status, response.headers["Content-Type"], await response.read()


async def test_every_kind_of_answer_is_json_dumps_spelling_of_its_fields(relay):
    accepted = await answer_of(relay, rating_body(rating_id=1))
    duplicate = await answer_of(relay, rating_body(rating_id=1))
    ignored = await answer_of(relay, json.dumps({"webhook_type": "task_done", "merchant_id": 9}).encode())
    quarantined = await answer_of(relay, rating_body(rating_id=2, stars=7, external_id="9" * 300))

    statuses = [(status, json.loads(body)["status"]) for status, _, body in (accepted, duplicate, ignored)]
    assert statuses == [(202, "accepted"), (200, "duplicate"), (202, "ignored")]
    assert len(json.loads(quarantined[2])["errors"]) == 2
    for _, content_type, body in (accepted, duplicate, ignored, quarantined):
        assert content_type == "application/json; charset=utf-8"
        assert body == json.dumps(json.loads(body)).encode()
    assert set(json.loads(ignored[2])) == {"status", "id"}
    assert set(json.loads(accepted[2])) == {"status", "id", "delivery_id"}
