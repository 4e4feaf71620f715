"""A contract fuzzer (schemathesis) against the real app: every answer fits the document, which says all."""

import asyncio
import csv
import io
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from relay import throttle
from relay.app import create_app
from relay.domain.ids import MAX_ID
from relay.linkfile import links_to_csv
from relay.ops.admin import page_cursor
from relay.ops.openapi import DOCUMENT
from relay.settings import Settings
from tests.conftest import WEBHOOK_TOKEN
from tests.test_openapi import ADMIN_TOKEN, CLIENT_ID, CLIENT_SECRET, JWT_SECRET


@pytest.fixture(scope="module")
def relay_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The relay, every optional part on, served from a thread on a port the kernel picked on 127.0.0.1."""
    folder: Path = tmp_path_factory.mktemp("fuzz")
    relay = Settings(
        _env_file=None,
        database_url=f"sqlite:///{folder / 'relay.db'}",
        bringg_webhook_token=WEBHOOK_TOKEN,
        bringg_oauth_client_id=CLIENT_ID,
        bringg_oauth_client_secret=CLIENT_SECRET,
        bringg_jwt_secret=JWT_SECRET,
        relay_admin_token=ADMIN_TOKEN,
    )
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(relay, run_worker=False))

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        with pytest.MonkeyPatch.context() as patch:
            # The fuzzer checks that every operation refuses a missing or wrong token, from one address,
            # hundreds of times: the throttle (tests of its own) would turn those 401s into 429s after ten.
            patch.setattr(throttle, "FAILURES_ALLOWED", 1_000_000)
            yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# What the document's own formats mean, for the fuzzer to make valid values of; invalid ones it makes itself.
IDS = st.integers(min_value=0, max_value=MAX_ID)
schemathesis.openapi.format("relay-id-cursor", IDS.map(lambda id_: page_cursor([id_])))
schemathesis.openapi.format(
    "relay-link-cursor", st.tuples(IDS, st.text()).map(lambda key: page_cursor(list(key)))
)
schemathesis.openapi.format(
    "relay-instant",
    st.one_of(
        # A duration that reaches back no further than the year 1 (`1000000w` does).
        st.tuples(st.integers(0, 10**5), st.sampled_from("smhdw")).map(lambda d: f"{d[0]}{d[1]}"),
        # A day inside the range, so no offset carries it past the year 9999 or before the year 1.
        st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)).map(datetime.isoformat),
        st.datetimes(
            min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.timezones()
        ).map(datetime.isoformat),
    ),
)
CSV_ROWS = st.lists(st.tuples(IDS, st.text(min_size=1), IDS).map(list), max_size=5)
schemathesis.openapi.media_type(
    "text/csv", CSV_ROWS.map(lambda rows: links_to_csv([]).encode() + _csv(rows).encode())
)


def _csv(rows: list[list[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


# The document as packaged, which the app serves at /openapi.json (test_openapi checks that it does).
# The fuzzer signs in as the document says: the admin token, and Bringg's static webhook token.
CREDENTIALS = {"adminToken": {"bearer": ADMIN_TOKEN}, "bringgToken": {"api_key": f"Bearer {WEBHOOK_TOKEN}"}}
schema = schemathesis.openapi.from_dict(
    json.loads(DOCUMENT), config=SchemathesisConfig.from_dict({"auth": {"openapi": CREDENTIALS}})
)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_fits_the_document(case: Any, relay_url: str) -> None:
    # 503 is how /readyz says "not ready" (no worker runs here): an answer, not a server error.
    unready_is_an_answer = [not_a_server_error] if case.operation.path == "/readyz" else []
    case.call_and_validate(base_url=relay_url, excluded_checks=unready_is_an_answer)
