"""Requests aiohttp cannot parse, carrying a credential: a warning naming the kind, no bytes, no echo."""

import json
import signal
import socket
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, InvalidHeader, InvalidURLError

from relay.http import malformation
from tests.conftest import WEBHOOK_TOKEN
from tests.processes import free_port, relay_process, wait_until_ready

K = TypeVar("K", bound=Hashable)

SECRET = "Zk9SecretQw7Xv"
MALFORMED = {
    "nul_at_end_of_authorization": (
        b"POST /webhooks/bringg HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer "
        + SECRET.encode()
        + b"\x00\r\n\r\n",
        "Invalid header value char",
    ),
    "folded_authorization": (
        b"POST /webhooks/bringg HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer\r\n "
        + SECRET.encode()
        + b"\r\n\r\n",
        "Unexpected whitespace after header value",
    ),
    "space_before_colon": (
        b"POST /webhooks/bringg HTTP/1.1\r\nHost: relay\r\nAuthorization : Bearer "
        + SECRET.encode()
        + b"\r\n\r\n",
        "Invalid header token",
    ),
    "bad_byte_in_request_line": (
        b"POST /oauth/token?grant_type=client_credentials&client_secret="
        + SECRET.encode()
        + b"\x01 HTTP/1.1\r\nHost: relay\r\nContent-Length: 0\r\n\r\n",
        "Invalid char in url query",
    ),
}


def exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes, read until the relay closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def sent_to_relay(workdir: Path, requests: Mapping[K, bytes], **settings: str) -> tuple[dict[K, bytes], str]:
    """Each raw request sent once to a real `relay serve --no-worker`: its answers, and its log after."""
    port = free_port()
    env = {
        "PORT": str(port),
        "RELAY_HOST": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{workdir / 'relay.db'}",
        "BRINGG_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        **settings,
    }
    log_path = workdir / "relay.log"
    with relay_process("serve", "--no-worker", env=env, cwd=workdir, log_path=log_path) as relay:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz?scope=intake", relay)
        answers = {key: exchange(port, raw) for key, raw in requests.items()}
        relay.send_signal(signal.SIGTERM)
        assert relay.wait(timeout=20) == 0
    return answers, log_path.read_text()


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each malformation sent once to a real `relay serve`: its answers, and its log once it stopped."""
    raws = {name: raw for name, (raw, _) in MALFORMED.items()}
    answers, output = sent_to_relay(tmp_path_factory.mktemp("malformed"), raws)
    lines = [json.loads(line) for line in output.splitlines()]
    return {"answers": answers, "output": output, "lines": lines}


def test_no_secret_reaches_an_answer_or_any_output_line(refusals: dict[str, Any]) -> None:
    assert SECRET not in refusals["output"]
    for name, answer in refusals["answers"].items():
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), name
        assert SECRET.encode() not in answer, name


@pytest.mark.parametrize("name", MALFORMED)
def test_each_malformation_is_one_warning_naming_its_kind(refusals: dict[str, Any], name: str) -> None:
    kind = MALFORMED[name][1]
    [line] = [line for line in refusals["lines"] if line.get("kind") == kind]
    assert (line["event"], line["level"]) == ("http.malformed_request", "warning")
    assert line["remote"] == "127.0.0.1"
    assert "exception" not in line
    [answer] = [answer for other, answer in refusals["answers"].items() if other == name]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/problem+json" in head
    assert json.loads(body)["detail"] == f"the request is not valid HTTP ({kind})"


def test_nothing_is_logged_at_error_level(refusals: dict[str, Any]) -> None:
    assert [line for line in refusals["lines"] if line["level"] in ("error", "critical")] == []


@pytest.mark.parametrize(
    "error",
    [
        InvalidURLError("letmein"),  # the pure-Python parser puts the raw target in the message
        BadStatusLine("GET hunter two"),
        InvalidHeader(b"Authorization : letmein"),
    ],
)
def test_a_message_without_the_parsers_reason_is_named_by_its_class_only(error: BadHttpMessage) -> None:
    assert malformation(error) == type(error).__name__


# A body announced as compressed that is not: aiohttp fails on it while dropping it after the answer.
UNDECODABLE = {
    (path, encoding): (
        f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Encoding: {encoding}\r\nContent-Length: 5\r\n\r\nhello"
    ).encode()
    for path in ("/oauth/token", "/webhooks/bringg", "/admin/links")
    for encoding in ("gzip", "deflate")
}


@pytest.fixture(scope="module")
def undecodable(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each undecodable body sent once, without credentials, to a real `relay serve --no-worker`."""
    answers, output = sent_to_relay(
        tmp_path_factory.mktemp("undecodable"),
        UNDECODABLE,
        BRINGG_OAUTH_CLIENT_ID="bringg",
        BRINGG_OAUTH_CLIENT_SECRET="oauth-client-secret-0123456789",
        RELAY_ADMIN_TOKEN="admin-token-0123456789abcdef",
    )
    return {"answers": answers, "lines": [json.loads(line) for line in output.splitlines()]}


def test_an_undecodable_body_is_answered_and_logs_no_error_or_traceback(undecodable: dict[str, Any]) -> None:
    statuses = {sent: answer.split(b"\r\n")[0] for sent, answer in undecodable["answers"].items()}
    assert statuses == {
        sent: b"HTTP/1.1 400 Bad Request" if sent[0] == "/oauth/token" else b"HTTP/1.1 401 Unauthorized"
        for sent in UNDECODABLE
    }
    lines = undecodable["lines"]
    assert [line for line in lines if line["level"] in ("error", "critical") or "exception" in line] == []
    # One warning for each, naming the kind of malformation, after the answer.
    malformed = [line for line in lines if line["event"] == "http.malformed_request"]
    assert [(line["level"], line["kind"], line["remote"]) for line in malformed] == [
        ("warning", "ContentEncodingError", "127.0.0.1")
    ] * len(UNDECODABLE)
