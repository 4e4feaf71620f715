"""Settings: the example file documents every setting with its true default, and bad values are named."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from relay.settings import DEFAULT_MESSAGE_TEMPLATE, Settings, SettingsError, load_settings
from tests.processes import run_relay

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "relay.example.env"


# Characters that a POSIX shell, systemd's EnvironmentFile= and Docker's --env-file all take verbatim in
# an unquoted value (no quote, backslash, $, backquote, whitespace, shell operator, or leading ~).
PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.,:/@%+=-]*")


def documented() -> dict[str, str]:
    """The example file as Docker's --env-file reads it: NAME=VALUE lines, the value verbatim."""
    pairs = {}
    for line in EXAMPLE.read_text().splitlines():
        line = line.lstrip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def sourced_by_a_shell() -> dict[str, str]:
    """The variables `set -a; . ./file` exports in a POSIX shell (and systemd reads plain values alike)."""
    done = subprocess.run(
        ["sh", "-c", 'set -a; . "$0"; env -0', str(EXAMPLE)],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stderr == ""
    return dict(item.split("=", 1) for item in done.stdout.split("\0") if item)


def test_example_env_documents_every_setting_and_nothing_else():
    fields = {name.upper() for name in Settings.model_fields}

    assert set(documented()) == fields


def test_example_env_values_are_the_defaults(monkeypatch):
    for name, value in documented().items():
        monkeypatch.setenv(name, value)
    from_file = Settings(_env_file=None)
    for name in documented():
        monkeypatch.delenv(name)
    defaults = Settings(_env_file=None)

    assert from_file.model_dump() == defaults.model_dump()


def test_example_env_shows_the_default_message_template_it_leaves_empty():
    assert documented()["RELAY_MESSAGE_TEMPLATE"] == ""
    assert f"# {DEFAULT_MESSAGE_TEMPLATE}\n" in EXAMPLE.read_text()


def test_example_env_reads_the_same_in_a_shell_systemd_and_docker():
    by_docker = documented()
    by_shell = sourced_by_a_shell()

    assert {name: by_shell.get(name) for name in by_docker} == by_docker
    # Plain values are also what systemd reads: it removes only quotes, backslashes and outer whitespace.
    assert [name for name, value in by_docker.items() if not PLAIN_VALUE.fullmatch(value)] == []


def test_every_problem_is_reported_on_its_own_line(monkeypatch):
    monkeypatch.setenv("PORT", "-1")
    monkeypatch.setenv("QUIVO_MAX_RPS", "0")
    monkeypatch.setenv("RELAY_INQUIRY_ID_PATTERN", "INQ-[0-9]+")
    monkeypatch.setenv("LOG_LEVEL", "loud")

    with pytest.raises(SettingsError) as raised:
        load_settings(serves_webhooks=True, runs_worker=True)

    names = [problem.split(":")[0] for problem in raised.value.problems]
    assert names == ["PORT", "QUIVO_MAX_RPS", "RELAY_INQUIRY_ID_PATTERN", "LOG_LEVEL"]


def test_cross_setting_rules_name_each_problem(monkeypatch):
    monkeypatch.setenv("BRINGG_AUTH", "none")
    monkeypatch.setenv("BRINGG_WEBHOOK_TOKEN", "t")
    monkeypatch.setenv("QUIVO_RATING_MIN", "5")
    monkeypatch.setenv("QUIVO_RATING_MAX", "1")

    with pytest.raises(SettingsError) as raised:
        load_settings(serves_webhooks=True, runs_worker=True)

    text = "\n".join(raised.value.problems)
    assert "BRINGG_AUTH=none contradicts" in text
    assert "QUIVO_RATING_MAX: must be greater than QUIVO_RATING_MIN" in text
    assert "QUIVO_API_KEY: required" in text


def test_template_with_an_unknown_field_is_refused_at_start(monkeypatch):
    monkeypatch.setenv("BRINGG_AUTH", "none")
    monkeypatch.setenv("RELAY_MESSAGE_TEMPLATE", "Stars: {stars} from {customer}")

    with pytest.raises(SettingsError) as raised:
        load_settings(serves_webhooks=True, runs_worker=False)

    assert raised.value.problems == [
        "RELAY_MESSAGE_TEMPLATE: unknown field {customer}: use one of stars, comment, reasons, external_id, "
        "title, merchant_id, rating_id"
    ]


def test_durations_take_seconds_or_iso_8601(monkeypatch):
    monkeypatch.setenv("RELAY_UNMATCHED_TTL", "P2D")
    monkeypatch.setenv("RELAY_MAX_AGE", "3600")

    settings = Settings(_env_file=None)

    assert (settings.relay_unmatched_ttl.days, settings.relay_max_age.total_seconds()) == (2, 3600)


LONG = "0123456789abcdef-long-enough"
GUESSABLE = ["BRINGG_WEBHOOK_TOKEN", "BRINGG_JWT_SECRET", "BRINGG_OAUTH_CLIENT_SECRET", "RELAY_ADMIN_TOKEN"]


@pytest.mark.parametrize("name", GUESSABLE)
def test_a_credential_strangers_can_guess_needs_16_characters(monkeypatch, name):
    monkeypatch.setenv("BRINGG_OAUTH_CLIENT_ID", "bringg")
    for setting in GUESSABLE:
        monkeypatch.setenv(setting, f"{setting.lower()}-{LONG}")
    monkeypatch.setenv(name, "fifteen-chars-x")

    with pytest.raises(SettingsError) as raised:
        load_settings(serves_webhooks=True, runs_worker=False)

    assert raised.value.problems == [
        f"{name}: shorter than 16 characters; use a long random value (openssl rand -hex 32)"
    ]
    monkeypatch.setenv(name, "sixteen-chars-xy")
    assert load_settings(serves_webhooks=True, runs_worker=False).auth_methods == ["token", "jwt", "oauth"]


def problems_with(monkeypatch, name: str, value: str, *, serves_webhooks: bool) -> list[str]:
    """What the start-up check says when `name` holds `value` and every other secret is sound."""
    for setting in ("BRINGG_WEBHOOK_TOKEN", "QUIVO_API_KEY", "QUIVO_USERNAME", "QUIVO_PASSWORD"):
        monkeypatch.setenv(setting, f"{setting.lower()}-{LONG}")
    monkeypatch.setenv("BRINGG_OAUTH_CLIENT_ID", "bringg")
    monkeypatch.setenv("BRINGG_OAUTH_CLIENT_SECRET", f"oauth-{LONG}")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(serves_webhooks=serves_webhooks, runs_worker=not serves_webhooks)
    return raised.value.problems


@pytest.mark.parametrize(
    ("name", "serves_webhooks"),
    [
        ("BRINGG_WEBHOOK_TOKEN", True),
        ("BRINGG_JWT_SECRET", True),
        ("BRINGG_OAUTH_CLIENT_SECRET", True),
        ("RELAY_ADMIN_TOKEN", True),
        ("QUIVO_API_KEY", False),
        ("QUIVO_PASSWORD", False),
    ],
)
@pytest.mark.parametrize("spaced", [LONG + "\n", " " + LONG, LONG + "\r\n", "\t" + LONG + " "])
def test_a_secret_with_whitespace_around_it_is_refused_saying_so(monkeypatch, name, serves_webhooks, spaced):
    assert problems_with(monkeypatch, name, spaced, serves_webhooks=serves_webhooks) == [
        f"{name}: starts or ends with whitespace (a secret file's newline?); remove it"
    ]


@pytest.mark.parametrize("name", GUESSABLE[:3])
def test_the_admin_token_must_not_be_a_webhook_credential(monkeypatch, name):
    monkeypatch.setenv("BRINGG_OAUTH_CLIENT_ID", "bringg")
    for setting in GUESSABLE[:3]:
        monkeypatch.setenv(setting, f"{setting.lower()}-{LONG}")
    monkeypatch.setenv("RELAY_ADMIN_TOKEN", f"{name.lower()}-{LONG}")

    with pytest.raises(SettingsError) as raised:
        load_settings(serves_webhooks=True, runs_worker=False)

    assert raised.value.problems == [
        f"RELAY_ADMIN_TOKEN: must differ from {name} "
        "(whoever can send webhooks must not also hold the admin API)"
    ]


def test_relay_serve_refuses_weak_secrets_with_one_line_each_and_no_value(tmp_path: Path):
    shared = "shared-by-webhook-and-admin"
    env = {"BRINGG_WEBHOOK_TOKEN": shared, "RELAY_ADMIN_TOKEN": shared, "BRINGG_JWT_SECRET": "short-jwt\n"}

    result = run_relay("serve", "--no-worker", env=env, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "relay: configuration error: BRINGG_JWT_SECRET: starts or ends with whitespace (a secret file's "
        "newline?); remove it",
        "relay: configuration error: BRINGG_JWT_SECRET: shorter than 16 characters; use a long random value "
        "(openssl rand -hex 32)",
        "relay: configuration error: RELAY_ADMIN_TOKEN: must differ from BRINGG_WEBHOOK_TOKEN (whoever can "
        "send webhooks must not also hold the admin API)",
    ]
    assert shared not in result.stdout + result.stderr
    assert "short-jwt" not in result.stdout + result.stderr


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer ", "BEARER  "])
def test_the_admin_token_must_not_open_the_webhook_as_its_bearer_credential(monkeypatch, scheme):
    # The header `Bearer X` passes the webhook token `Bearer X` and the admin token `X` alike.
    monkeypatch.setenv("BRINGG_WEBHOOK_TOKEN", f"{scheme}admin-{LONG}")
    monkeypatch.setenv("RELAY_ADMIN_TOKEN", f"admin-{LONG}")

    with pytest.raises(SettingsError) as raised:
        load_settings(serves_webhooks=True, runs_worker=False)

    assert raised.value.problems == [
        "RELAY_ADMIN_TOKEN: must differ from BRINGG_WEBHOOK_TOKEN "
        "(whoever can send webhooks must not also hold the admin API)"
    ]


NOT_PRINTABLE = (
    "BRINGG_WEBHOOK_TOKEN: holds characters that are not printable "
    "(a byte-order mark, zero-width space or control character?); remove them"
)


@pytest.mark.parametrize(
    "secret",
    ["\ufeff" + LONG, LONG + "\u200b", LONG[:8] + "\x7f" + LONG[8:], LONG + "\u2060", "\x1b[0m" + LONG],
)
def test_a_secret_holding_invisible_characters_is_refused_saying_so(monkeypatch, secret):
    monkeypatch.setenv("BRINGG_WEBHOOK_TOKEN", secret)

    with pytest.raises(SettingsError) as raised:
        load_settings(serves_webhooks=True, runs_worker=False)

    assert raised.value.problems == [NOT_PRINTABLE]


@pytest.mark.parametrize(
    ("name", "serves_webhooks"),
    [("BRINGG_OAUTH_CLIENT_ID", True), ("BRINGG_TOKEN_HEADER", True), ("QUIVO_USERNAME", False)],
)
@pytest.mark.parametrize("spaced", ["bringg\n", " bringg", "bringg\t"])
def test_a_name_sent_on_every_request_with_whitespace_around_it_is_refused(
    monkeypatch, name, serves_webhooks, spaced
):
    assert problems_with(monkeypatch, name, spaced, serves_webhooks=serves_webhooks) == [
        f"{name}: starts or ends with whitespace (a secret file's newline?); remove it"
    ]


def test_relay_serve_refuses_invisible_characters_and_a_bearer_shared_admin_token(tmp_path: Path):
    admin = f"admin-{LONG}"
    env = {
        "BRINGG_WEBHOOK_TOKEN": f"Bearer {admin}",
        "RELAY_ADMIN_TOKEN": admin,
        "BRINGG_JWT_SECRET": "\ufeff" + f"jwt-{LONG}",
        "BRINGG_OAUTH_CLIENT_ID": "bringg\n",
        "BRINGG_OAUTH_CLIENT_SECRET": f"oauth-{LONG}\u200b",
    }

    result = run_relay("serve", "--no-worker", env=env, cwd=tmp_path)

    assert result.returncode == 2
    invisible = NOT_PRINTABLE.removeprefix("BRINGG_WEBHOOK_TOKEN: ")
    assert result.stderr.splitlines() == [
        f"relay: configuration error: BRINGG_JWT_SECRET: {invisible}",
        f"relay: configuration error: BRINGG_OAUTH_CLIENT_SECRET: {invisible}",
        "relay: configuration error: BRINGG_OAUTH_CLIENT_ID: starts or ends with whitespace (a secret file's "
        "newline?); remove it",
        "relay: configuration error: RELAY_ADMIN_TOKEN: must differ from BRINGG_WEBHOOK_TOKEN (whoever can "
        "send webhooks must not also hold the admin API)",
    ]
    assert LONG not in result.stdout + result.stderr
