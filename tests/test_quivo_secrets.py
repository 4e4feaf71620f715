"""A Quivo that echoes our login in its refusal: nothing of the password or key leaves a real relay."""

import html
import json
import re
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.chaos.harness import relay_env
from tests.conftest import AUTH
from tests.forwarding import rating_webhook
from tests.processes import free_port, http_json, relay_process, run_relay, wait_for, wait_until_ready

API_KEY = "qk-Vw3Rt9Ym2Lp8"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORDS = {
    # Whitespace collapsed before redaction turned these two spaces into one, and the password got through.
    "two_spaces": "Qv7  zeta-mango-91",
    # JSON echoes spell these `\"` and `\\`, which a search for the raw password does not find.
    "quote": 'Qv7"zeta"mango"91',
    "backslash": "Qv7\\zeta\\mango\\91",
    # Long enough that every excerpt cuts it, leaving a piece that a search for the whole does not find.
    "long": "".join(f"{n:03d}q" for n in range(150)),
}
# Any run this long of a secret, in any spelling, counts as a leak.
LEAK_CHARS = 5


# How a vendor may spell the password back: no redactor can chase them all, so no login answer is kept.
EXOTIC_SPELLINGS: dict[str, Callable[[str], str]] = {
    "dotnet_json": lambda text: "".join(c if c.isalnum() else f"\\u{ord(c):04x}" for c in text),
    "html_numeric": lambda text: "".join(c if c.isalnum() else f"&#{ord(c)};" for c in text),
    "wrapped": lambda text: "\n".join(text[start : start + 6] for start in range(0, len(text), 6)),
    "upper": str.upper,
    "spaced": " ".join,
    "reversed": lambda text: text[::-1],
}
# Short alphanumeric runs between special characters: an escaped spelling shows no run of 4 of the raw one.
EXOTIC_PASSWORD = "Kx9&Wq7<Zr4>Tj2\"Pm5'Yb8"


class EchoingQuivo(BaseHTTPRequestHandler):
    """Refuses every login with 401, repeating the request back in every spelling a careless gateway uses."""

    # Set per test: the spelling the answer opens with, within reach of any excerpt.
    spelling: Callable[[str], str] | None = None

    def do_POST(self) -> None:
        request = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        password = json.loads(request).get("password", "")
        key = self.headers.get("X-Api-Key", "")
        opening = type(self).spelling
        echo = (
            (f"{opening(password)} {opening(key)}\n".encode() if opening else b"")
            + b'{"message": "Unauthorized", "request": '
            + request
            + b', "as_text": '
            + json.dumps(request.decode()).encode()
            + f', "x-api-key": "{key}", "form": "password={quote(password)}"}}\npassword: {password}'.encode()
        )
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(echo)))
        self.end_headers()
        self.wfile.write(echo)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads what the relay says, not what this server does."""


@pytest.fixture
def echoing_quivo(request: pytest.FixtureRequest) -> Iterator[str]:
    spelling = getattr(request, "param", None)
    handler = type("Echoing", (EchoingQuivo,), {"spelling": staticmethod(spelling) if spelling else None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def answer_text(url: str, headers: dict[str, str] | None = None) -> str:
    """The body of a GET, whatever its status."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return str(answer.read().decode())
    except urllib.error.HTTPError as refused:
        return str(refused.read().decode())


def leaks(secret: str, text: str) -> list[str]:
    """Every run of LEAK_CHARS characters of the secret, raw or JSON-escaped, found in the text."""
    spellings = {secret, json.dumps(secret)[1:-1]}
    return sorted(
        {
            spelling[start : start + LEAK_CHARS]
            for spelling in spellings
            for start in range(len(spelling) - LEAK_CHARS + 1)
            if spelling[start : start + LEAK_CHARS] in text
        }
    )


def traces(secret: str, text: str) -> list[str]:
    """Every run of 4 characters of the secret, in any case, forwards or backwards, in the text as written or
    with JSON `\\uXXXX` escapes, numeric HTML entities, whitespace and escaped line breaks undone."""
    lowered = text.lower()
    decoded = [
        lowered,
        html.unescape(lowered),
        re.sub(r"\\+u([0-9a-f]{4})", lambda escape: chr(int(escape[1], 16)), lowered),
    ]
    views = decoded + [re.sub(r"\s|\\+[nrt]", "", view) for view in decoded]
    spellings = {secret.lower(), secret.lower()[::-1]}
    return sorted(
        {
            spelling[start : start + 4]
            for spelling in spellings
            for start in range(len(spelling) - 3)
            if any(spelling[start : start + 4] in view for view in views)
        }
    )


@pytest.mark.parametrize(
    "echoing_quivo", EXOTIC_SPELLINGS.values(), ids=EXOTIC_SPELLINGS.keys(), indirect=True
)
def test_a_login_refusal_spelling_the_password_oddly_leaves_no_trace_of_it(
    tmp_path: Path, echoing_quivo: str
) -> None:
    outputs, refusal = refused_relay_outputs(tmp_path, echoing_quivo, EXOTIC_PASSWORD)

    found = {
        f"{name} in {where} line {number}": pieces
        for where, text in outputs.items()
        for number, line in enumerate(text.splitlines(), 1)
        for name, secret in {"password": EXOTIC_PASSWORD, "api key": API_KEY}.items()
        if (pieces := traces(secret, line))
    }
    assert found == {}
    # The line says what the answer was like, never what it said.
    assert "body" not in refusal
    assert (refusal["status"], refusal["content_type"]) == (401, "application/json")
    assert refusal["body_bytes"] > len(EXOTIC_PASSWORD)


@pytest.mark.parametrize("password", PASSWORDS.values(), ids=PASSWORDS.keys())
def test_an_echoed_login_leaks_nothing_to_logs_readyz_status_or_the_admin_api(
    tmp_path: Path, echoing_quivo: str, password: str
) -> None:
    outputs, refusal = refused_relay_outputs(tmp_path, echoing_quivo, password)

    secrets = {"password": password, "api key": API_KEY}
    found = {
        f"{name} in {where}": leaks(secret, text)
        for where, text in outputs.items()
        for name, secret in secrets.items()
    }
    assert {place: pieces for place, pieces in found.items() if pieces} == {}
    # Each says what is wrong.
    assert "Quivo refused the credentials, 401" in outputs["readyz"]
    assert json.loads(outputs["delivery"])["delivery"]["last_error"] == "Quivo refused the credentials, 401"
    assert json.loads(outputs["status"])["worker"]["paused"] == "Quivo refused the credentials, 401"
    assert (refusal["status"], refusal["credentials_refused"]) == (401, True)
    assert "body" not in refusal


def refused_relay_outputs(
    tmp_path: Path, quivo_url: str, password: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """What a real relay whose logins Quivo refuses says everywhere, and its quivo.login_failed line."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "relay.log"
    env = relay_env(
        tmp_path,
        quivo_url,
        port,
        QUIVO_API_KEY=API_KEY,
        QUIVO_PASSWORD=password,
        RELAY_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    with relay_process("serve", env=env, cwd=tmp_path, log_path=log_path) as relay:
        wait_until_ready(f"{base}/readyz?scope=intake", relay)
        accepted = http_json("POST", f"{base}/webhooks/bringg", rating_webhook(5, "INQ-5"), AUTH)

        def paused_lines() -> list[dict[str, Any]]:
            return [line for line in log_lines(log_path) if line["event"] == "worker.paused"]

        # The first line pauses; a later one is a failed login probe, with its own error text.
        wait_for(
            lambda: any("probe_error" in line for line in paused_lines()), "a failed login probe", timeout=30
        )
        delivery_url = f"{base}/admin/deliveries/{accepted['delivery_id']}"
        wait_for(
            lambda: http_json("GET", delivery_url, None, ADMIN)["delivery"]["last_error"],
            "the paused delivery's last_error",
            timeout=30,
        )
        wait_for(lambda: "paused" in answer_text(f"{base}/readyz"), "/readyz saying paused", timeout=30)
        readyz = answer_text(f"{base}/readyz")
        delivery = answer_text(delivery_url, ADMIN)
        listing = answer_text(f"{base}/admin/deliveries", ADMIN)
        status = run_relay("status", "--json", env=env, cwd=tmp_path)
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=20)

    outputs = {
        "log": log_path.read_text(),
        "readyz": readyz,
        "status": status.stdout + status.stderr,
        "delivery": delivery,
        "listing": listing,
    }
    [refusal, *_] = [line for line in log_lines(log_path) if line["event"] == "quivo.login_failed"]
    return outputs, refusal
