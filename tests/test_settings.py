"""Settings: the example file documents every setting with its true default, and bad values are named."""

import re
from pathlib import Path

import pytest

from relay.settings import Settings, SettingsError, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "relay.example.env"


def documented() -> dict[str, str]:
    lines = EXAMPLE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    return {name: value for name, value in pairs}


def test_example_env_documents_every_setting_and_nothing_else():
    fields = {name.upper() for name in Settings.model_fields}

    assert set(documented()) == fields


def test_example_env_values_are_the_defaults(monkeypatch):
    for name in list(documented()):
        monkeypatch.delenv(name, raising=False)
    from_file = Settings(_env_file=EXAMPLE)
    defaults = Settings(_env_file=None)

    assert from_file.model_dump() == defaults.model_dump()


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
