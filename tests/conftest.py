"""Shared test fixtures: settings on a temporary database, the relay app, and the vendors' fixtures."""

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from relay.settings import Settings
from relay.store.db import Database

# The vendors' own payloads live beside the project in ../shared; tests/fixtures holds unedited copies for a
# clone that sits elsewhere.
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
FIXTURES = SHARED_FIXTURES if SHARED_FIXTURES.is_dir() else Path(__file__).resolve().parent / "fixtures"

WEBHOOK_TOKEN = "test-webhook-token-0123456789"
AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}


def fixture_bytes(name: str) -> bytes:
    """A vendor fixture, byte for byte."""
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a fresh database in tmp_path; keyword overrides use field names."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'relay.db'}",
            "bringg_webhook_token": WEBHOOK_TOKEN,
            "log_format": "json",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
async def database(make_settings: Callable[..., Settings]) -> AsyncIterator[Database]:
    """An opened, migrated database on tmp_path, closed after the test."""
    db = Database(make_settings().database_path, timeout_s=5)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
