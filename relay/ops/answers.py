"""JSON as operators read it, from the admin API and `relay ... --json` alike: one form for instants."""

import dataclasses
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from aiohttp import web

from relay.domain.rating import format_instant


def to_json(value: object, *, indent: int | None = None) -> str:
    """`value` as JSON: dataclasses as objects, instants as `2026-12-01T18:42:38.123456Z` (UTC)."""
    return json.dumps(value, indent=indent, default=_plain)


def json_response(value: object, *, status: int = 200) -> web.Response:
    """An answer of the admin API, its body encoded as `to_json` does."""
    return web.json_response(value, status=status, dumps=to_json)


def _plain(value: object) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
