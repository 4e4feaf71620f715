"""docs/operations.md kept true: its log contract, settings, commands, endpoints and metrics are the code's.

Log events are found by parsing every module of relay/ with `ast`. A logger is a name bound to
`structlog.get_logger(...)` or `logging.getLogger(...)`; an emitter is a logger's method (`log.info`, ...)
or a name bound to such methods (`emit = log.error if dead else log.info`). The first positional argument
of a call to an emitter is:
- a string literal: that event;
- an f-string (`f"webhook.{stored.status}"`): expanded with every value its placeholder can take, listed in
  DYNAMIC_PARTS; a placeholder missing there fails the test, so no new dynamic name slips by unexpanded;
- anything else (a variable carrying the event, as the worker's one line per delivery pass does): every
  string literal of that module shaped like an event (`area.what`) counts, logger names excepted.
"""

import argparse
import ast
import itertools
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, get_args

import pytest
import structlog
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from relay import cli
from relay.app import create_app
from relay.domain.delivery import DELIVERY_STATES
from relay.keys import STORE
from relay.logs import bind_request_id
from relay.ops.metrics import DELIVERY_OUTCOMES, METRICS, WEBHOOK_OUTCOMES, RelayMetrics
from relay.settings import Settings
from relay.store.records import StoredStatus
from tests.beats import worker_beat

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operations.md"
PACKAGE = ROOT / "relay"

EVENT = re.compile(r"[a-z][a-z_]*\.[a-z][a-z_]*")
LOG_METHODS = frozenset(
    {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg"}
)
LOGGER_FACTORIES = frozenset({"get_logger", "getLogger"})
# Every value a placeholder of an f-string event name can take, by the placeholder's source text.
DYNAMIC_PARTS: dict[str, tuple[str, ...]] = {"stored.status": get_args(StoredStatus)}

# Label values the doc's PromQL may name, by metric and label.
METRIC_LABELS: dict[tuple[str, str], tuple[str, ...]] = {
    ("relay_webhooks_received_total", "outcome"): WEBHOOK_OUTCOMES,
    ("relay_delivery_outcomes_total", "outcome"): DELIVERY_OUTCOMES,
    ("relay_deliveries", "state"): DELIVERY_STATES,
}
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


# Events in the code --------------------------------------------------------------------------------


def logged_events(source: str, where: str = "<source>") -> set[str]:
    """The event names a module's log calls can emit (see the module docstring for the rules)."""
    tree = ast.parse(source)
    assigned = list(_assignments(tree))
    loggers = {name for name, value in assigned if _factory_call(value)}
    # A logger bound to context (`self._log = log.bind(tenant=...)`) logs the same events.
    loggers |= {name for name, value in assigned if _binds(value, loggers)}
    emitters = {name for name, value in assigned if _is_emitter(value, loggers, set())}
    events: set[str] = set()
    passed_on = False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and _is_emitter(node.func, loggers, emitters)):
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            events.add(first.value)
        elif isinstance(first, ast.JoinedStr):
            events |= _expand(first, f"{where}:{node.lineno}")
        else:
            passed_on = True
    if passed_on:
        logger_names = {
            arg.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and _factory_call(node)
            for arg in node.args
            if isinstance(arg, ast.Constant)
        }
        events |= {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and EVENT.fullmatch(node.value)
        } - logger_names
    return events


def _assignments(tree: ast.AST) -> Iterator[tuple[str, ast.expr]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            yield from (
                (ast.unparse(target), node.value)
                for target in node.targets
                if isinstance(target, ast.Name | ast.Attribute)
            )
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            yield node.target.id, node.value


def _factory_call(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in LOGGER_FACTORIES


def _binds(node: ast.expr, loggers: set[str]) -> bool:
    func = node.func if isinstance(node, ast.Call) else None
    return isinstance(func, ast.Attribute) and func.attr == "bind" and ast.unparse(func.value) in loggers


def _is_emitter(node: ast.expr, loggers: set[str], emitters: set[str]) -> bool:
    if isinstance(node, ast.Attribute):
        return ast.unparse(node.value) in loggers and node.attr in LOG_METHODS
    if isinstance(node, ast.Name):
        return node.id in emitters
    if isinstance(node, ast.IfExp):
        return _is_emitter(node.body, loggers, emitters) and _is_emitter(node.orelse, loggers, emitters)
    return False


def _expand(name: ast.JoinedStr, where: str) -> set[str]:
    choices: list[tuple[str, ...]] = []
    for part in name.values:
        if isinstance(part, ast.FormattedValue):
            key = ast.unparse(part.value)
            assert key in DYNAMIC_PARTS, (
                f"{where}: event name built from {{{key}}}: list its values in DYNAMIC_PARTS"
            )
            choices.append(DYNAMIC_PARTS[key])
        else:
            assert isinstance(part, ast.Constant)
            choices.append((str(part.value),))
    return {"".join(parts) for parts in itertools.product(*choices)}


@cache
def code_events() -> frozenset[str]:
    events: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        events |= logged_events(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return frozenset(events)


def code_loggers() -> set[str]:
    """The names of the loggers the relay logs with: a literal, or the module's own for `__name__`."""
    names = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for _, value in _assignments(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(value, ast.Call) and _factory_call(value) and value.args:
                first = value.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names.add(first.value)
                elif isinstance(first, ast.Name) and first.id == "__name__":
                    names.add(module)
    return names


# The document --------------------------------------------------------------------------------------

FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
COMMENT = re.compile(r"(?:^|\s)#.*$")
SEGMENT_BREAK = re.compile(r"\|\||&&|[|;]|\$\(")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=\S*")


@cache
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def inline_spans() -> list[str]:
    """Inline code outside the fenced blocks."""
    return SPAN.findall(FENCE.sub("", doc()))


def code_lines() -> list[str]:
    """Every line of code in the document: block lines (continuations joined, comments cut) and spans."""
    lines = [line for block in FENCE.findall(doc()) for line in block.replace("\\\n", " ").splitlines()]
    return [COMMENT.sub("", line) for line in lines] + inline_spans()


def shell_segments() -> Iterator[list[str]]:
    """The words of each simple command in the code, leading VAR=value assignments dropped."""
    for line in code_lines():
        for segment in SEGMENT_BREAK.split(line):
            words = segment.split()
            while words and ASSIGNMENT.fullmatch(words[0]):
                words.pop(0)
            if words and words[0] == "xargs":  # `... | xargs -n1 relay replay`: the command xargs runs
                words = list(itertools.dropwhile(lambda word: word.startswith("-"), words[1:]))
            if words:
                yield words


def table_first_cells(header: str) -> list[str]:
    """The first cell of every row of the table whose first header cell is `header`."""
    cells: list[str] = []
    lines = iter(doc().splitlines())
    for line in lines:
        if line.startswith("|") and line.strip("|").split("|")[0].strip() == header:
            next(lines)  # the | --- | line
            for row in lines:
                if not row.startswith("|"):
                    break
                cells.append(row.strip("|").split("|")[0].strip())
    return cells


def documented_loggers() -> set[str]:
    """The loggers the common-fields table names under `logger`."""
    return {
        name
        for line in doc().splitlines()
        if line.startswith("| `logger` |")
        for name in SPAN.findall(line)[1:]
    }


def contract_events() -> list[str]:
    events = []
    for cell in table_first_cells("event"):
        names = SPAN.findall(cell)
        assert len(names) == 1, f"one event per row of the contract table, not {cell!r}"
        events.append(names[0])
    return events


# The log contract ----------------------------------------------------------------------------------


def test_every_event_the_code_logs_is_in_the_contract_table_and_only_those():
    documented = contract_events()

    assert len(documented) == len(set(documented)), "an event is listed twice"
    assert sorted(code_events() - set(documented)) == [], "logged but not in docs/operations.md"
    assert sorted(set(documented) - code_events()) == [], "in docs/operations.md but never logged"


def test_every_event_named_anywhere_in_the_doc_is_logged():
    named = {span for span in inline_spans() if EVENT.fullmatch(span)}

    assert "delivery.dead" in named
    assert sorted(named - code_events() - documented_loggers()) == []


def test_the_logger_field_lists_every_logger_of_the_code():
    assert documented_loggers() == code_loggers()


def test_the_event_finder_reads_literals_fstrings_and_events_passed_on():
    source = """
import structlog
log = structlog.get_logger("relay.example")

def record(stored, event, dead):
    log.info("example.literal", field=1)
    emit = log.error if dead else log.info
    emit(f"webhook.{stored.status}")
    emit(event)
    return "example.passed_on", "not an event"

class Loop:
    def __init__(self):
        self._log = log.bind(tenant="a")

    def run(self):
        self._log.warning("example.bound")
"""
    statuses = {f"webhook.{status}" for status in get_args(StoredStatus)}

    assert logged_events(source) == {"example.literal", "example.passed_on", "example.bound", *statuses}
    with pytest.raises(AssertionError, match="DYNAMIC_PARTS"):
        logged_events('import structlog\nlog = structlog.get_logger()\nlog.info(f"example.{unknown}")\n')


def test_webhook_and_delivery_events_are_the_outcomes_their_metrics_count():
    def outcomes(prefix: str) -> set[str]:
        return {event.removeprefix(prefix) for event in code_events() if event.startswith(prefix)}

    assert outcomes("webhook.") == set(WEBHOOK_OUTCOMES)
    assert outcomes("delivery.") == set(DELIVERY_OUTCOMES)


def test_every_line_carries_the_common_fields(lines):
    bind_request_id("req-1")
    structlog.get_logger("relay.docs_check").warning("webhook.quarantined", webhook_id=1)
    bind_request_id(None)
    structlog.get_logger("relay.docs_check").info("worker.started")
    bound, unbound = (json.loads(line) for line in lines.getvalue().splitlines())

    assert bound["event"] == "webhook.quarantined"
    assert (bound["level"], bound["logger"], bound["request_id"]) == ("warning", "relay.docs_check", "req-1")
    assert bound["timestamp"].endswith("Z")
    assert datetime.fromisoformat(bound["timestamp"]).utcoffset() is not None
    assert "request_id" not in unbound
    assert {"timestamp", "level", "logger", "event"} <= set(unbound)


# Settings, commands, endpoints, metrics ------------------------------------------------------------


def test_every_setting_named_in_the_doc_exists():
    fields = {name.upper() for name in Settings.model_fields}
    prefixes = sorted({name.split("_")[0] for name in fields})
    mentioned = set(re.findall(rf"\b(?:{'|'.join(prefixes)})_[A-Z0-9_]*[A-Z0-9]\b", doc()))

    assert "RELAY_READY_MAX_BACKLOG_AGE_S" in mentioned
    assert sorted(mentioned - fields) == []


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_problem(words: list[str]) -> str | None:
    """Why `relay <words>` is not a command line the CLI takes (its commands and --options), or None."""
    parser = cli._parser()
    rest = list(words)
    while rest and (commands := _subcommands(parser)):
        if rest[0] not in commands:
            return f"relay {' '.join(words)}: no command {rest[0]!r} (has {', '.join(sorted(commands))})"
        parser = commands[rest.pop(0)]
    for word in rest:
        option = word.split("=")[0]
        if option.startswith("--") and option not in parser._option_string_actions:
            return f"relay {' '.join(words)}: no option {option}"
    return None


def test_every_relay_command_in_the_doc_is_in_the_cli():
    commands = [words[1:] for words in shell_segments() if words[0] == "relay"]
    problems = [problem for words in commands if (problem := _command_problem(words))]

    assert ["serve", "--no-worker"] in commands
    assert problems == []


def test_the_command_check_refuses_unknown_commands_and_options():
    assert _command_problem(["links", "import", "links.csv"]) is None
    assert _command_problem(["links", "imports"]) is not None
    assert _command_problem(["serve", "--no-such-option"]) is not None


HTTP_METHOD = re.compile(r"^(GET|POST|PUT|DELETE|HEAD|PATCH)\s+(/\S*)")
URL_PATH = re.compile(r"(?:\$BASE|https?://[^/\s\"']+)(/[^\s\"'?]*)")
PLACEHOLDER = re.compile(r"\$\{?\w+\}?|\{[^}]*\}|<[^>]*>")


def doc_endpoints() -> list[tuple[str | None, str]]:
    """(method, path) of every endpoint the doc calls; method None where the doc names a path alone."""
    found: list[tuple[str | None, str]] = []
    for words in shell_segments():
        if words[0] == "curl":
            segment = " ".join(words)
            explicit = re.search(r"-X\s+([A-Z]+)", segment)
            sends = re.search(r"\s(?:--data\S*|-d|-F|-T)\s", segment)
            method = explicit[1] if explicit else "POST" if sends else "GET"
            found += [(method, path) for path in URL_PATH.findall(segment)]
    for span in inline_spans():
        if named := HTTP_METHOD.match(span):
            found.append((named[1], named[2]))
        elif re.match(r"/[a-z]", span):
            found.append((None, span))
        else:
            found += [(None, path) for path in URL_PATH.findall(span)]
    return [(method, PLACEHOLDER.sub("1", path).split("?")[0]) for method, path in found]


async def test_every_endpoint_the_doc_calls_is_served(make_settings: Callable[..., Settings]):
    app = create_app(make_settings(relay_admin_token="admin-token"), run_worker=False)

    async def served(method: str, path: str) -> bool:
        match = await app.router.resolve(make_mocked_request(method, path, app=app))
        return match.http_exception is None

    endpoints = doc_endpoints()
    missing = [
        (method, path)
        for method, path in endpoints
        if not any([await served(each, path) for each in ([method] if method else ["GET", "POST"])])
    ]

    assert ("POST", "/admin/deliveries/1/replay") in endpoints
    assert missing == []


def _metric_names() -> set[str]:
    names = set()
    for family in RelayMetrics().registry.collect():
        names |= {family.name, *(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ()))}
    return names


def test_every_metric_and_label_value_in_the_doc_is_exposed():
    text = doc().replace("\\|", "|")  # a | inside a table cell is escaped
    named = set(re.findall(r"\brelay_[a-z_]+\b", text))
    wrong_labels: list[Any] = []
    for metric, matchers in re.findall(r"\b(relay_[a-z_]+)\{([^}]*)\}", text):
        for label, operator, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', matchers):
            allowed = METRIC_LABELS.get((metric, label))
            values = value.split("|") if "~" in operator else [value]
            if allowed is not None:
                wrong_labels += [
                    (metric, label, each)
                    for each in values
                    if each not in allowed and not PLACEHOLDER.fullmatch(each)
                ]

    assert "relay_backlog_age_seconds" in named
    assert sorted(named - _metric_names()) == []
    assert wrong_labels == []


# Alert rules ---------------------------------------------------------------------------------------

# What may not open a plain YAML scalar, and what may not appear inside one (a comment, a mapping).
YAML_INDICATORS = tuple("-?:,[]{}#&*!|>'\"%@`")
MARKDOWN_ESCAPE = re.compile(r"\\[\\`*_{}\[\]()#+\-.!|<>]")


def yaml_subset(text: str) -> Any:
    """Block mappings, block sequences and plain scalars: the YAML of a rule file, and nothing else.

    PyYAML is no dependency of the relay; a document outside this subset fails the test instead of being
    read differently from how Prometheus reads it.
    """
    lines = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in text.splitlines() if line.strip()]
    value, end = _yaml_node(lines, 0)
    assert end == len(lines), f"unparsed from {lines[end]}"
    return value


def _yaml_node(lines: list[tuple[int, str]], at: int) -> tuple[Any, int]:
    indent, text = lines[at]
    if text.startswith("- "):
        items = []
        while at < len(lines) and lines[at][0] == indent and lines[at][1].startswith("- "):
            # An item's first line is read as if its text began two columns in, where the rest of it is.
            item, at = _yaml_node([*lines[:at], (indent + 2, lines[at][1][2:]), *lines[at + 1 :]], at)
            items.append(item)
        return items, at
    mapping: dict[str, Any] = {}
    while at < len(lines) and lines[at][0] == indent and not lines[at][1].startswith("- "):
        key, colon, value = lines[at][1].partition(":")
        assert colon and re.fullmatch(r"[a-z_]+", key), lines[at]
        assert key not in mapping, f"{key} twice"
        at += 1
        if value.strip():
            assert value.startswith(" "), lines[at - 1]
            mapping[key] = _yaml_scalar(value.strip())
        else:
            assert at < len(lines) and lines[at][0] > indent, f"{key} has no value"
            mapping[key], at = _yaml_node(lines, at)
    return mapping, at


def _yaml_scalar(text: str) -> str:
    assert not text.startswith(YAML_INDICATORS), f"not a plain scalar: {text}"
    assert ": " not in text and " #" not in text, f"YAML would read more than a string: {text}"
    return text


@cache
def alert_rules() -> list[dict[str, Any]]:
    """The rules of the doc's Prometheus rule file (its one fenced yaml block)."""
    [block] = re.findall(r"```yaml\n(.*?)```", doc(), re.DOTALL)
    [group] = yaml_subset(block)["groups"]
    assert group["name"] == "relay"
    return list(group["rules"])


async def test_alert_rules_are_a_rule_file_prometheus_reads_as_shown(aiohttp_client, make_settings):
    relay = await aiohttp_client(create_app(make_settings(), run_worker=False))
    # Series that appear once there is something to count: a worker's beat, a call to Quivo.
    await relay.app[STORE].beat(worker_beat(datetime.now(UTC)))
    relay.app[METRICS].quivo_requests_of("default")("login", 200)
    exposed = {
        sample.name
        for family in text_string_to_metric_families(await (await relay.get("/metrics")).text())
        for sample in family.samples
    }
    rules = alert_rules()
    expressions = [rule["expr"] for rule in rules]
    named = {metric for expr in expressions for metric in re.findall(r"\brelay_[a-z_]+\b", expr)}
    in_table = set(re.findall(r"\| `(Relay[A-Za-z]+)` \|", doc()))

    assert {"relay_backlog_age_seconds", "relay_worker_heartbeat_age_seconds"} <= named
    assert sorted(named - exposed) == []
    assert [expr for expr in expressions if MARKDOWN_ESCAPE.search(expr)] == []
    assert [expr for expr in expressions if not _balanced(expr)] == []
    assert {rule["labels"]["severity"] for rule in rules} <= {"page", "ticket"}
    assert all(re.fullmatch(r"\d+[smhd]", rule.get("for", "0s")) for rule in rules)
    assert sorted(rule["alert"] for rule in rules) == sorted(in_table)


def _balanced(expr: str) -> bool:
    closing = {")": "(", "]": "[", "}": "{"}
    opened: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            opened.append(char)
        elif char in closing and (not opened or opened.pop() != closing[char]):
            return False
    return not opened


def test_yaml_subset_refuses_what_prometheus_would_read_otherwise():
    with pytest.raises(AssertionError):
        yaml_subset("expr: up == 1 # a comment YAML drops")
    with pytest.raises(AssertionError):
        yaml_subset('expr: "quoted"')
    assert yaml_subset("groups:\n  - name: relay\n    rules:\n      - alert: A\n        expr: up > 0\n") == {
        "groups": [{"name": "relay", "rules": [{"alert": "A", "expr": "up > 0"}]}]
    }
