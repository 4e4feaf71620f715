"""Log lines spelled as before: JSON as json.dumps writes it, timestamps as structlog's TimeStamper does."""

import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from relay.logs import UtcStamper, bind_request_id, configure_logging, get_logger

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def logged(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize(
    "ns",
    [
        1_764_640_000_123_456_789,  # nanoseconds dropped, as datetime.now drops them
        1_764_640_000_000_000_000,  # a whole second: isoformat writes no fraction
        1_764_640_000_000_001_000,
        1_764_640_000_999_999_999,
        1_764_640_001_000_000_000,
    ],
)
def test_the_timestamp_is_spelled_as_timestamper_spells_it(ns):
    stamper = UtcStamper()
    expected = (EPOCH + timedelta(microseconds=ns // 1000)).isoformat().replace("+00:00", "Z")

    assert stamper.spell(ns) == expected
    assert stamper.spell(ns) == expected  # the second's text, now from the cache


def test_a_line_is_json_dumps_spelling_in_structlog_order(lines):
    bind_request_id("req-1")
    structlog.get_logger("relay.webhook").warning(
        "webhook.quarantined", tenant="tëst", errors=['say "no"'], duration_ms=1.5, delivery_id=None
    )

    (line,) = logged(lines)
    fields = json.loads(line)
    assert line == json.dumps(fields)  # ", " and ": " between, non-ASCII escaped
    assert list(fields) == [
        *("tenant", "errors", "duration_ms", "delivery_id", "event"),
        *("request_id", "level", "logger", "timestamp"),
    ]
    assert (fields["level"], fields["logger"], fields["request_id"]) == ("warning", "relay.webhook", "req-1")
    assert datetime.fromisoformat(fields["timestamp"]).utcoffset() == timedelta(0)


def test_a_value_json_cannot_hold_is_written_as_its_repr(lines):
    structlog.get_logger("relay").info("tenants.reloaded", tenants={"b"}, at=EPOCH)

    fields = json.loads(logged(lines)[0])
    assert (fields["tenants"], fields["at"]) == ("{'b'}", repr(EPOCH))


def test_an_exception_and_a_stack_are_written_out(lines):
    log = structlog.get_logger("relay")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("http.unhandled_error")
    log.info("worker.started", stack_info=True)

    failed, stacked = (json.loads(line) for line in logged(lines))
    assert failed["level"] == "error"
    assert "RuntimeError: boom" in failed["exception"] and "exc_info" not in failed
    assert "test_an_exception_and_a_stack_are_written_out" in stacked["stack"]
    assert "stack_info" not in stacked


def test_other_libraries_lines_are_stamped_and_spelled_alike(lines):
    logging.getLogger("aiohttp.server").error("Error handling request")

    (line,) = logged(lines)
    fields = json.loads(line)
    assert line == json.dumps(fields)
    assert (fields["event"], fields["level"], fields["logger"]) == (
        "Error handling request",
        "error",
        "aiohttp.server",
    )
    assert fields["timestamp"].endswith("Z")


def test_a_bound_logger_writes_its_keys_then_the_calls_then_the_event_as_structlog_orders_them(lines):
    bind_request_id("req-1")
    log = structlog.get_logger("relay.worker").bind(worker="w1", tenant="a")
    log.info("delivery.sent", tenant="b", attempt=2)
    log.warning("delivery.%s", "late", delay_s=1.5)  # %-style arguments take structlog's own way

    sent, late = (json.loads(line) for line in logged(lines))
    assert list(sent) == [
        *("worker", "tenant", "attempt", "event"),
        *("request_id", "level", "logger", "timestamp"),
    ]
    assert (sent["tenant"], sent["level"], late["event"], late["level"]) == (
        "b",
        "info",
        "delivery.late",
        "warning",
    )
    # The bound keys are the logger's own: a call's keys do not stay with it.
    log.info("delivery.sent")
    assert json.loads(logged(lines)[-1])["tenant"] == "a"


def test_lines_below_the_level_are_not_written(lines):
    configure_logging("WARNING", "json", lines)
    log = structlog.get_logger("relay")
    log.info("worker.started")
    log.debug("worker.idle")
    log.warning("worker.slow", lag_s=2)

    assert [json.loads(line)["event"] for line in logged(lines)] == ["worker.slow"]


def test_a_kept_logger_writes_as_structlogs_does_and_is_captured_as_it_is(lines, monkeypatch):
    monkeypatch.setattr(time, "time_ns", lambda: 1_764_640_000_123_456_789)
    log = get_logger("relay.webhook")
    log.info("webhook.accepted", webhook_id=1)
    with structlog.testing.capture_logs() as captured:
        log.warning("webhook.quarantined", webhook_id=2)
    log.bind(tenant="a").info("webhook.accepted", webhook_id=3)
    structlog.get_logger("relay.webhook").info("webhook.accepted", webhook_id=4)

    first, third, fourth = logged(lines)
    assert first == fourth.replace('"webhook_id": 4', '"webhook_id": 1')
    assert json.loads(third)["tenant"] == "a"
    assert captured == [{"webhook_id": 2, "event": "webhook.quarantined", "log_level": "warning"}]


def test_a_kept_logger_keeps_nothing_while_structlog_keeps_no_loggers(lines, capsys):
    structlog.reset_defaults()  # cache_logger_on_first_use=False: each call resolves the logger anew
    log = get_logger("relay")
    log.info("worker.started")
    configure_logging("INFO", "json", lines)
    log.info("worker.stopped")

    assert "worker.started" in capsys.readouterr().out
    assert [json.loads(line)["event"] for line in logged(lines)] == ["worker.stopped"]
