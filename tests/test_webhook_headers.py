"""What the webhook route keeps of a request's headers: its Content-Type as sent, bytes that are not UTF-8
spelled `\\xNN` (SQLite and JSON hold text only)."""

import asyncio
import json

import pytest

from relay.app import create_app
from relay.keys import STORE
from tests.conftest import AUTH, BACKENDS
from tests.test_webhook import rating_body

pytestmark = pytest.mark.backends(*BACKENDS)


async def _post_raw(host: str, port: int, content_type: bytes, body: bytes) -> dict[str, object]:
    """POST with the Content-Type's bytes as given (an HTTP client would encode text)."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        b"POST /webhooks/bringg HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n"
        + b"Authorization: "
        + AUTH["Authorization"].encode()
        + b"\r\n"
        + b"Content-Type: "
        + content_type
        + b"\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
    )
    writer.write(head + body)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return json.loads(answer.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (b"application/json", "application/json"),
        (b"application/json; charset=utf-8", "application/json; charset=utf-8"),
        ("text/plain; note=tëst".encode(), "text/plain; note=tëst"),
        (b"application/json; charset=\xff\xfe", "application/json; charset=\\xff\\xfe"),
    ],
)
async def test_the_content_type_is_kept_as_sent_with_other_bytes_than_utf8_spelled(
    aiohttp_client, make_settings, sent, kept
):
    client = await aiohttp_client(create_app(make_settings(), run_worker=False))

    answer = await _post_raw(client.host, client.port, sent, rating_body())

    assert answer["status"] == "accepted"
    stored = await client.app[STORE].get_webhook(answer["id"])
    assert stored is not None
    assert stored.content_type == kept
