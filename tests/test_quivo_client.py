"""The Quivo client against small fake Quivo servers over real HTTP."""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import unused_port
from pytest_aiohttp import AiohttpServer

from relay.quivo import client as quivo_client
from relay.quivo.client import LoginFailed, QuivoAnswer, QuivoClient, QuivoNoAnswer, QuivoUnreachable
from relay.quivo.models import CustomerInquiry
from relay.quivo.redact import Redactor
from tests.conftest import FIXTURES, FakeClock

FIXTURE = FIXTURES / "quivo"
API_KEY = "key-4f1c0ffee"
USERNAME = "relay@example.com"
PASSWORD = "hunter2-secret"
TAG = "[bringg:7:42]"
EXPIRED = {"message": "The incoming token has expired"}


@dataclass
class Seen:
    """One request the fake Quivo received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeQuivo:
    """Issues tokens, refuses unknown ones with 401, and records every request it was sent."""

    def __init__(self) -> None:
        self.logins: list[Seen] = []
        self.calls: list[Seen] = []
        self.valid_tokens: set[str] = set()
        self.auth_prefix = ""
        self.login_status = 200
        self.login_body: str | None = None
        self.login_delay_s = 0.0
        self.answer: Callable[[], web.Response] | None = None  # a response can be sent only once
        self.answer_delay_s = 0.0
        self.drop_connection = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/login", self._login)
        app.router.add_post("/customerInquiries/{inquiry_id}/ratings", self._inquiry)
        app.router.add_get("/customerInquiries/{inquiry_id}", self._inquiry)
        return app

    @staticmethod
    async def _seen(request: web.Request) -> Seen:
        return Seen(request.method, request.path, dict(request.headers), await request.read())

    async def _login(self, request: web.Request) -> web.Response:
        self.logins.append(await self._seen(request))
        await asyncio.sleep(self.login_delay_s)
        if self.login_body is not None:
            return web.Response(status=self.login_status, text=self.login_body)
        token = f"token-{len(self.logins)}"
        self.valid_tokens.add(token)
        return web.json_response({"token": token}, status=self.login_status)

    async def _inquiry(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(await self._seen(request))
        if self.drop_connection:
            assert request.transport is not None
            request.transport.close()
        await asyncio.sleep(self.answer_delay_s)
        authorization = request.headers.get("Authorization", "")
        if authorization.removeprefix(self.auth_prefix) not in self.valid_tokens:
            return web.json_response(EXPIRED, status=401)
        if self.answer is not None:
            return self.answer()
        inquiry = {"id": int(request.match_info["inquiry_id"]), "status": "WITH_YOU", "messages": []}
        return web.json_response(inquiry)


@pytest.fixture
def quivo() -> FakeQuivo:
    return FakeQuivo()


@pytest.fixture
async def base_url(aiohttp_server: AiohttpServer, quivo: FakeQuivo) -> str:
    server = await aiohttp_server(quivo.app())
    return str(server.make_url("/"))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        # A fresh logger, in case an earlier test cached the module's logger under another configuration.
        monkeypatch.setattr(quivo_client, "log", structlog.get_logger())
        yield captured


def make_client(session: aiohttp.ClientSession, base_url: str, **options: Any) -> QuivoClient:
    return QuivoClient(
        session, base_url=base_url, api_key=API_KEY, username=USERNAME, password=PASSWORD, **options
    )


def assert_no_secret(text: str) -> None:
    for secret in (API_KEY, PASSWORD, "token-"):
        assert secret not in text


async def test_login_sends_key_and_credentials_then_bare_token(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo, logs: list[MutableMapping[str, Any]]
) -> None:
    client = make_client(session, base_url)
    assert client.credentials_ok is None

    answer = await client.post_rating(31, 4.0, f"Great delivery {TAG}")

    [login] = quivo.logins
    assert login.headers["X-Api-Key"] == API_KEY
    assert login.headers["Content-Type"].startswith("application/json")
    assert login.body == b'{"username": "relay@example.com", "password": "hunter2-secret"}'
    [call] = quivo.calls
    assert (call.method, call.path) == ("POST", "/customerInquiries/31/ratings")
    assert call.headers["X-Api-Key"] == API_KEY
    assert call.headers["Authorization"] == "token-1"
    assert call.body == b'{"rating": 4.0, "ratingMessage": "Great delivery [bringg:7:42]"}'
    assert answer.status == 200
    assert answer.inquiry is not None and answer.inquiry.id == 31
    assert client.credentials_ok is True
    assert client.last_login_error is None
    [line] = logs
    assert line["event"] == "quivo.login" and line["log_level"] == "info" and line["status"] == 200
    assert line["duration_ms"] >= 0
    assert_no_secret(repr(line))


async def test_auth_prefix_is_put_before_the_token(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    quivo.auth_prefix = "Bearer "
    client = make_client(session, base_url, auth_prefix="Bearer ")

    answer = await client.get_inquiry(31)

    assert answer.status == 200
    assert [(c.method, c.path, c.headers["Authorization"]) for c in quivo.calls] == [
        ("GET", "/customerInquiries/31", "Bearer token-1")
    ]


@pytest.mark.parametrize(
    ("ttl_s", "still_fresh_s", "renewed_s"),
    [(3600.0, 3299.0, 3301.0), (100.0, 89.0, 91.0)],  # margin: 5 minutes, or 10% when that is smaller
)
async def test_token_is_renewed_before_expiry_and_not_before(
    session: aiohttp.ClientSession,
    base_url: str,
    quivo: FakeQuivo,
    ttl_s: float,
    still_fresh_s: float,
    renewed_s: float,
) -> None:
    clock = FakeClock()
    client = make_client(session, base_url, token_ttl_s=ttl_s, clock=clock)
    await client.ensure_login()
    login_at = clock.now

    clock.now = login_at + still_fresh_s
    await client.get_inquiry(1)
    assert len(quivo.logins) == 1

    clock.now = login_at + renewed_s
    await client.get_inquiry(1)
    assert len(quivo.logins) == 2
    assert [c.headers["Authorization"] for c in quivo.calls] == ["token-1", "token-2"]


async def test_concurrent_callers_share_one_login(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    quivo.login_delay_s = 0.05
    client = make_client(session, base_url)

    answers = await asyncio.gather(*(client.get_inquiry(n) for n in range(50)))

    assert len(quivo.logins) == 1
    assert {answer.status for answer in answers} == {200}


async def test_concurrent_callers_share_one_failed_login(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    quivo.login_status, quivo.login_body, quivo.login_delay_s = 401, "bad credentials", 0.05
    client = make_client(session, base_url)

    outcomes = await asyncio.gather(*(client.get_inquiry(n) for n in range(50)), return_exceptions=True)

    assert len(quivo.logins) == 1
    assert all(isinstance(outcome, LoginFailed) for outcome in outcomes)
    assert quivo.calls == []


async def test_401_logs_in_again_and_repeats_once(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    client = make_client(session, base_url)
    await client.ensure_login()
    quivo.valid_tokens.clear()  # Quivo ended the session early

    answer = await client.post_rating(31, 5.0, TAG)

    assert answer.status == 200
    assert len(quivo.logins) == 2
    assert [c.headers["Authorization"] for c in quivo.calls] == ["token-1", "token-2"]


async def test_a_second_401_is_returned_without_more_tries(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    quivo.answer = lambda: web.json_response(EXPIRED, status=401)
    client = make_client(session, base_url)

    answer = await client.post_rating(31, 5.0, TAG)

    assert answer.status == 401
    assert answer.inquiry is None
    assert "expired" in answer.body_excerpt
    assert (len(quivo.logins), len(quivo.calls)) == (2, 2)


async def test_concurrent_401s_share_one_new_login(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    client = make_client(session, base_url)
    await client.ensure_login()
    quivo.valid_tokens.clear()

    answers = await asyncio.gather(*(client.get_inquiry(n) for n in range(10)))

    assert {answer.status for answer in answers} == {200}
    assert len(quivo.logins) == 2
    assert len(quivo.calls) == 20


async def test_refused_login_raises_login_failed_without_secrets(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo, logs: list[MutableMapping[str, Any]]
) -> None:
    # A careless gateway that echoes the credentials back must not leak them into errors or logs.
    quivo.login_status = 401
    quivo.login_body = f'{{"message": "Unauthorized", "apiKey": "{API_KEY}", "password": "{PASSWORD}"}}'
    client = make_client(session, base_url)

    with pytest.raises(LoginFailed) as raised:
        await client.post_rating(31, 5.0, TAG)

    assert raised.value.status == 401
    assert raised.value.sent is False
    # The error says what is wrong; nothing anywhere repeats Quivo's answer, the log line only its shape.
    assert str(raised.value) == "Quivo refused the credentials, 401"
    assert client.credentials_ok is False
    assert client.last_login_error is not None
    assert_no_secret(client.last_login_error)
    assert quivo.calls == []
    [line] = logs
    assert (line["event"], line["log_level"], line["status"]) == ("quivo.login_failed", "warning", 401)
    assert line["credentials_refused"] is True
    assert line["reason"] == "Quivo refused the credentials, 401"
    assert "body" not in line
    assert (line["content_type"], line["body_bytes"]) == ("text/plain", len(quivo.login_body))
    assert_no_secret(repr(line))


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_an_answer_to_a_call_echoing_its_headers_is_excerpted_with_key_and_token_masked(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo, method: str
) -> None:
    # Rating POSTs and inquiry GETs carry the API key and the session token, never the password.
    echo = {"message": "Bad Request", "headers": {"X-Api-Key": API_KEY, "Authorization": "token-1"}}
    quivo.answer = lambda: web.json_response(echo, status=400)
    client = make_client(session, base_url)

    answer = await (client.post_rating(31, 5.0, TAG) if method == "POST" else client.get_inquiry(31))

    assert answer.status == 400
    assert answer.body_excerpt.startswith('{"message": "Bad Request", "headers": {"X-Api-Key": "***", ')
    assert_no_secret(answer.body_excerpt)


async def test_login_answer_without_token_is_a_failed_login(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    quivo.login_body = '{"session": "abc"}'
    client = make_client(session, base_url)

    with pytest.raises(LoginFailed) as raised:
        await client.ensure_login()

    assert raised.value.status == 200
    assert client.credentials_ok is False


async def test_odd_2xx_body_gives_an_answer_without_inquiry(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    quivo.answer = lambda: web.Response(status=200, text="<html>" + "x" * 2000)
    client = make_client(session, base_url)

    answer = await client.post_rating(31, 5.0, TAG)

    assert answer.status == 200
    assert answer.inquiry is None
    assert answer.body_excerpt == ("<html>" + "x" * 2000)[:500]


async def test_error_answer_keeps_retry_after_and_no_inquiry(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    quivo.answer = lambda: web.json_response({"id": 31}, status=503, headers={"Retry-After": "120"})
    client = make_client(session, base_url)

    answer = await client.post_rating(31, 5.0, TAG)

    assert (answer.status, answer.retry_after, answer.inquiry) == (503, "120", None)


async def test_connection_refused_at_login_is_unreachable(session: aiohttp.ClientSession) -> None:
    client = make_client(session, f"http://127.0.0.1:{unused_port()}")

    with pytest.raises(QuivoUnreachable) as raised:
        await client.post_rating(31, 5.0, TAG)

    assert raised.value.sent is False
    assert client.credentials_ok is None


async def test_connection_refused_on_a_call_is_unreachable(
    aiohttp_server: AiohttpServer, quivo: FakeQuivo
) -> None:
    server = await aiohttp_server(quivo.app())
    # A fresh connection per request, so the call meets the closed port rather than a stale pooled socket.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        client = make_client(session, str(server.make_url("/")))
        await client.ensure_login()
        await server.close()

        with pytest.raises(QuivoUnreachable) as raised:
            await client.post_rating(31, 5.0, TAG)

    assert raised.value.sent is False
    assert_no_secret(str(raised.value))


async def test_connection_closed_after_the_request_is_no_answer(
    session: aiohttp.ClientSession, base_url: str, quivo: FakeQuivo
) -> None:
    quivo.drop_connection = True
    client = make_client(session, base_url)

    with pytest.raises(QuivoNoAnswer) as raised:
        await client.post_rating(31, 5.0, TAG)

    assert raised.value.sent is True
    assert len(quivo.calls) == 1
    assert_no_secret(str(raised.value))


@pytest.mark.parametrize(
    "client_timeout",
    [aiohttp.ClientTimeout(sock_read=0.1), aiohttp.ClientTimeout(total=0.3)],
    ids=["read", "total"],
)
async def test_no_answer_in_time_is_no_answer(
    base_url: str, quivo: FakeQuivo, client_timeout: aiohttp.ClientTimeout
) -> None:
    quivo.answer_delay_s = 0.6
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        client = make_client(session, base_url)

        with pytest.raises(QuivoNoAnswer) as raised:
            await client.post_rating(31, 5.0, TAG)

    assert raised.value.sent is True
    assert len(quivo.calls) == 1


def test_documented_inquiry_parses_and_finds_rating_messages() -> None:
    inquiry = CustomerInquiry.model_validate_json(
        (FIXTURE / "customer_inquiry.doc-example.json").read_bytes()
    )

    assert (inquiry.id, inquiry.status, inquiry.current_rating) == (123, "WITH_YOU", 123.0)
    [message] = inquiry.messages
    assert (message.category, message.posted_at) == ("RATING_MESSAGE", "2023-11-07T05:31:56Z")
    assert inquiry.has_rating_message_with("<string>")
    assert not inquiry.has_rating_message_with(TAG)


def test_current_rating_of_a_2xx_answer_is_read_without_the_messages() -> None:
    body = (FIXTURE / "customer_inquiry.doc-example.json").read_bytes()

    rated = QuivoAnswer(status=200, retry_after=None, body=body, redactor=Redactor(()))
    refused = QuivoAnswer(status=400, retry_after=None, body=body, redactor=Redactor(()))

    assert (rated.current_rating, refused.current_rating) == (123.0, None)
    assert refused.inquiry is None


def test_inquiry_accepts_nulls_and_unknown_fields() -> None:
    inquiry = CustomerInquiry.model_validate_json(
        b'{"id": null, "status": null, "currentRating": null, "newField": {"x": 1}, "messages": null}'
    )
    assert inquiry.messages == ()
    with_nulls = CustomerInquiry.model_validate_json(
        b'{"messages": [null, {"category": null, "message": null, "created": null, "postedAt": null}]}'
    )
    assert not with_nulls.has_rating_message_with(TAG)


def test_only_rating_messages_count_as_proof() -> None:
    inquiry = CustomerInquiry.model_validate(
        {
            "messages": [
                {"category": "MESSAGE", "message": f"quoted {TAG}"},
                {"category": "RATING_MESSAGE", "message": "Fine [bringg:7:41]"},
            ]
        }
    )

    assert not inquiry.has_rating_message_with(TAG)
    assert inquiry.has_rating_message_with("[bringg:7:41]")
    assert not inquiry.has_rating_message_with("")


async def test_login_answered_503_is_unavailability_not_bad_credentials(aiohttp_server, logs) -> None:
    app = web.Application()

    async def login(request: web.Request) -> web.Response:
        return web.json_response({"message": "Service Unavailable"}, status=503)

    app.router.add_post("/login", login)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        client = QuivoClient(
            session, base_url=str(server.make_url("")).rstrip("/"), api_key="k", username="u", password="p"
        )
        with pytest.raises(QuivoUnreachable):
            await client.ensure_login()
        assert client.credentials_ok is None
    [line] = logs
    assert (line["event"], line["status"], line["credentials_refused"]) == ("quivo.login_failed", 503, False)
