"""`make chaos` report: the fault-injection figures (RELAY_CHAOS_RESULTS lines) as docs/reliability.md."""

import argparse
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "reliability.md"
RESULTS_ENV = "RELAY_CHAOS_RESULTS"
MISSING = "–"
COLUMNS = (
    ("sent", "webhooks sent"),
    ("acknowledged", "acknowledged"),
    ("stored", "stored"),
    ("delivered", "delivered"),
    ("delivered_twice", "delivered twice"),
    ("lost", "lost"),
    ("run_time_s", "run time (s)"),
)
# A table per backend the scenarios ran on (a line without one ran on SQLite). PostgreSQL's adds what only
# its scenario measures, from the figures' extra: a list counts its items.
BACKENDS = {
    "sqlite": ("SQLite", ()),
    "postgresql": (
        "PostgreSQL",
        (
            ("restarts", "processes killed and restarted"),
            ("database_stops", "database stops"),
            ("most_sends_at_once_per_inquiry", "most sends at once per inquiry"),
        ),
    ),
}
INTRO = """\
# Reliability

The relay promises that every webhook answered 2xx is delivered to Quivo exactly once, and that bad input
never takes it down. `tests/chaos/` breaks things on purpose to check that promise: each scenario drives real
`relay serve` / `relay worker` processes over HTTP against `relay sim-quivo` with its fault knobs, while a
sender posts distinct ratings the way Bringg does (what got no 2xx is sent again). The figures come from the
stand-in's record of what it committed (the reference tag on the last line of every rating message) and
from the relay's database. Scenarios 1-9 run on SQLite, scenario 10 on PostgreSQL: each backend has its
table.

`make test` runs every scenario in a small, fast profile; `make chaos` runs the full profile and writes this
page (`scripts/chaos_report.py`) from that run's figures alone, with the commit it ran on. A scenario's result
is `pass` only when the test that recorded its figures passed (pytest's outcome, recorded beside the figures
by `tests/chaos/conftest.py`), so did the tests of its file that record none (the hostile input's barrage),
and nothing was lost or sent twice; `make chaos` exits non-zero otherwise.
Replay a scenario with the seed shown: `RELAY_CHAOS_SEED=<seed>`.

- **webhooks sent**: distinct ratings posted at least once (resends after a refusal or a 503 not counted).
- **acknowledged**: ratings that got a 2xx. Only those are promised.
- **stored**: webhook rows / delivery rows in the relay's database for the scenario's merchant. A resend of
  a webhook that was stored but whose answer was lost (the relay died first) adds a `duplicate` webhook row,
  never a second delivery.
- **delivered**: distinct ratings at Quivo. **delivered twice**: ratings Quivo holds more than once.
- **lost**: acknowledged, yet not at Quivo once the relay had drained.

## Scenarios

1. **Kill storm**: sustained webhooks while `relay serve` is SIGKILLed and restarted at random moments
   (seeded), Quivo dropping a tenth of its answers after committing the rating. A killed worker's leases
   run out (3 x `QUIVO_TIMEOUT_S` + 5 s + `RELAY_UNSURE_SETTLE_S`) and the next one reads the inquiry back
   before sending again.
2. **Graceful stops**: SIGTERM under load, with Quivo slower than `RELAY_SHUTDOWN_GRACE_S`: each stop exits 0
   within the grace time (+ 2 s), finishes or releases every send it held (no row left `sending`), and the
   released sends that Quivo committed anyway are reconciled, not sent twice.
3. **Quivo outage**: every call answered 503 for a while. The relay-wide pause after failures (0.5 s,
   doubling) keeps the rating POSTs during the outage within
   `QUIVO_MAX_CONCURRENCY` x (ceil(log2(outage / 0.5 + 1)) + 1); nothing goes `dead`; everything is
   delivered after.
4. **Flaky Quivo**: 5xx (20 %), 429 with `Retry-After` (10 %), dropped answers (10 %) throughout, and a spell
   where Quivo answers (and commits) only after `QUIVO_TIMEOUT_S`.
5. **Credentials revoked, then restored**: deliveries pause without spending attempts (`attempts` stays 0),
   `/readyz` names the refused credentials, login probes back off (bounded logins), and deliveries resume
   within about the pause's length once Quivo accepts the credentials again.
6. **Storage failure** and 7. **hostile input**: see `tests/chaos/test_storage.py` and
   `tests/chaos/test_hostile.py`.
8. **Split deployment**: `relay serve --no-worker` and `relay worker` on one database, started together on a
   fresh database, then either or both SIGKILLed at random and restarted.
9. **Quivo commits late**: the first send to each inquiry loses its answer at once and Quivo commits it 3 s
   later (as behind an API gateway that gave up), within `RELAY_UNSURE_SETTLE_S` (4 s here): each unsure send
   is read back only after the settle time, finds its rating, and nothing is sent twice.
10. **PostgreSQL, many processes** (`tests/chaos/test_postgres.py`, its own table below): two
    `relay serve --no-worker` and three `relay worker` processes on one PostgreSQL database, a sender posting
    many ratings per inquiry to a few inquiries, and later versions of some, to both web processes in turn;
    Quivo fails a tenth of the calls (5xx), drops a tenth of its answers after committing, and for a spell
    answers only after `QUIVO_TIMEOUT_S`. Meanwhile workers and web processes are SIGKILLed one at a time
    and restarted, and PostgreSQL itself is stopped (`fast` and `immediate` in turn) and started again.
    Counted per version of a rating: the latest acknowledged version of each rating is at Quivo exactly
    once, an older acknowledged one is either there once or `superseded`, every acknowledged version is
    stored (no 2xx without a commit), and the stand-in never saw two rating POSTs at once for one inquiry.
    While the database is down every webhook gets 503 with `Retry-After`; every process keeps the pid it
    was started with (none exits, none crash-loops) and is ready again after the restart; each final
    SIGTERM exits 0 with its `worker.stopped` or `relay.stopped` line.
11. **SQLite intake process killed** (`tests/chaos/test_storage.py`): while webhooks arrive, the helper
    process that writes new webhooks for `relay serve` is SIGKILLed; the relay goes on through its writer
    thread, is stopped gracefully and started with a new helper, which is killed in turn. Each kill is
    logged once (`store.intake_process_ended`, returncode -9), and the relay keeps acknowledging webhooks
    after it.

## History: bugs these scenarios found (not a result of the run below)

Found by the runs of 2026-11-22 and fixed in commits d7706f8 and 085f076.

- Scenario 5: while deliveries were paused on refused credentials, every incoming webhook woke the worker and
  each wake-up became a login probe, so `/login` was called at the webhook rate and the probe delay doubled
  to its 60 s cap within a second: after the credentials were restored, deliveries waited up to a minute.
  The probe now waits out its delay; only a stop cuts it short (`relay/worker.py`, `_probe_login`).
- Scenario 7: a Content-Type or Authorization header with bytes that are not UTF-8 answered 500 (the value
  could not be stored, compared or handed to PyJWT); now the header is stored with `\\xNN` escapes and a bad
  credential is a 401 (`relay/http.py` `header_text`, `relay/bringg/auth.py`).
- Scenario 7: a merchant id beyond int64 in a webhook that failed full validation, or a timestamp whose
  offset puts it outside years 1-9999 in UTC, answered 500; now the webhook is quarantined with the reason
  (`relay/bringg/payload.py`).
- Scenario 7: a body aiohttp could not read (undecodable gzip/deflate, broken chunked framing) answered 500
  and logged `http.unhandled_error`; now it is a 400 problem+json. A client hanging up mid-body is dropped
  without an error line (`relay/http.py`).
- Scenario 7: `/oauth/token` answered 500 to a form that does not parse or to JSON nested too deep; now it
  is a 400 (`relay/bringg/routes.py`).
- A test's own mistake, found by a full run (not a relay bug): the hostile-input oracle expected a body
  stored when a deflate stream ended and a stray byte followed; aiohttp refuses that with its own 400 and
  nothing is stored, which is a clear answer. The oracle was corrected and the case pinned as an example.
"""


def load(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every figures line and test-outcome line of the results files, in order; torn or foreign lines are
    skipped."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and any(
                isinstance(row.get(key), str) for key in ("scenario", "outcome")
            ):
                rows.append(row)
    return rows


def _of_profile(rows: Sequence[Mapping[str, Any]], profile: str) -> list[tuple[int, Mapping[str, Any]]]:
    return [
        (index, row) for index, row in enumerate(rows) if profile == "any" or row.get("profile") == profile
    ]


def _latest_runs(rows: Sequence[Mapping[str, Any]], profile: str) -> dict[str, Any]:
    """Each test's latest run, from its figures or its outcome: a run that failed before recording figures
    still hides the figures of an older run."""
    return {row["test"]: row.get("run") for _, row in _of_profile(rows, profile) if row.get("test")}


def latest_per_scenario(rows: Sequence[Mapping[str, Any]], profile: str) -> list[Mapping[str, Any]]:
    """What the report shows, by scenario number: each test's figures from its latest run of the profile.

    Lines name their test and run; older lines that do not (the scenario's name is their only key) are
    kept until a newer, named line of the same scenario number replaces them.
    """
    wanted = [
        (index, row) for index, row in _of_profile(rows, profile) if isinstance(row.get("scenario"), str)
    ]
    latest_run = _latest_runs(rows, profile)
    named = [(i, row) for i, row in wanted if row.get("test") and row.get("run") == latest_run[row["test"]]]
    unnamed: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for index, row in wanted:
        if not row.get("test"):
            unnamed[row["scenario"]] = (index, row)
    newest_named: dict[int, int] = {}
    for index, row in named:
        number = _order(row["scenario"])[0]
        newest_named[number] = max(index, newest_named.get(number, -1))
    kept = [
        *named,
        *(
            (index, row)
            for index, row in unnamed.values()
            if newest_named.get(_order(row["scenario"])[0], -1) < index
        ),
    ]
    return [row for _, row in sorted(kept, key=lambda pair: (_order(pair[1]["scenario"]), pair[0]))]


def latest_outcomes(rows: Sequence[Mapping[str, Any]], profile: str) -> dict[str, Mapping[str, Any]]:
    """Each test's outcome line (pytest's outcome and the commit it ran on) from its latest run."""
    latest_run = _latest_runs(rows, profile)
    return {
        row["test"]: row
        for _, row in _of_profile(rows, profile)
        if isinstance(row.get("outcome"), str)
        and row.get("test")
        and row.get("run") == latest_run[row["test"]]
    }


def _order(scenario: str) -> tuple[int, str]:
    number = re.match(r"\s*(\d+)", scenario)
    return (int(number[1]) if number else 1_000_000, scenario)


def verdicts(rows: Sequence[Mapping[str, Any]], outcomes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Each scenario's result: 'pass' only when nothing was lost or sent twice, the test that recorded its
    figures passed, and so did every test of that file that records none (a barrage, such as the hostile
    input's, whose figures its last test sums up)."""
    recorders = {row.get("test") for row in rows}
    return [_verdict(row, outcomes, recorders) for row in rows]


def _verdict(row: Mapping[str, Any], outcomes: Mapping[str, Mapping[str, Any]], recorders: set[Any]) -> str:
    if row.get("lost", 0) or row.get("delivered_twice", 0):
        return "FAIL (lost or sent twice)"
    test = str(row.get("test") or "")
    outcome = outcomes.get(test)
    if outcome is None:
        return "unknown (no test outcome recorded)"
    if outcome["outcome"] != "passed":
        return f"FAIL (test {outcome['outcome']})"
    file = test.split("::")[0]
    barrage_failed = [
        other
        for other, line in outcomes.items()
        if other.split("::")[0] == file and other not in recorders and line["outcome"] == "failed"
    ]
    if barrage_failed:
        return f"FAIL ({len(barrage_failed)} other tests of its file failed)"
    return "pass"


def cell(row: Mapping[str, Any], key: str) -> str:
    if key == "stored":
        webhooks, deliveries = row.get("stored_webhooks"), row.get("stored_deliveries")
        if webhooks is None and deliveries is None:
            return _text(row.get("stored"))
        return f"{_text(webhooks)} / {_text(deliveries)}"
    return _text(row.get(key))


def backend_of(row: Mapping[str, Any]) -> str:
    return str(row.get("backend") or "sqlite")


def extra_cell(row: Mapping[str, Any], key: str) -> str:
    value = (row.get("extra") or {}).get(key)
    return _text(len(value) if isinstance(value, list) else value)


def _text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render(rows: Sequence[Mapping[str, Any]], outcomes: Mapping[str, Mapping[str, Any]], profile: str) -> str:
    lines = [INTRO]
    if not rows and not outcomes:
        lines.append(f"No results of the `{profile}` profile yet: run `make chaos`.\n")
        return "\n".join(lines)
    dates = sorted({str(row["date"]) for row in rows if row.get("date")})
    machines = sorted({(row.get("cores"), row.get("python")) for row in rows if row.get("cores")}, key=str)
    commits = sorted({str(line["commit"]) for line in outcomes.values() if line.get("commit")})
    lines.append("## Last run\n")
    lines.append("Everything below was measured by this run, and only by it.\n")
    lines.append(f"- Profile: `{', '.join(sorted({str(row.get('profile', MISSING)) for row in rows}))}`")
    if len(commits) == 1:
        lines.append(f"- Commit: {commits[0]}")
    elif commits:
        lines.append(f"- Commits (the lines come from more than one run): {', '.join(commits)}")
    else:
        lines.append("- Commit: not recorded")
    if dates:
        lines.append(f"- Date: {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else ""))
    for cores, python in machines:
        lines.append(f"- Machine: {cores} cores, Python {python}")
    lines.append(f"- Tests: {_tally(outcomes)}")
    failed = sorted(test for test, line in outcomes.items() if line["outcome"] == "failed")
    lines += [f"  - failed: `{test}`" for test in failed]
    seeded = [row for row in rows if row.get("seed") is not None]
    if seeded:
        lines.append("- Seeds (replay with `RELAY_CHAOS_SEED`):")
        lines += [f"  - {row['scenario']}: {row['seed']}" for row in seeded]
    lines.append("")
    results = verdicts(rows, outcomes)
    known = list(BACKENDS)
    present = {backend_of(row) for row in rows}
    for backend in sorted(
        present, key=lambda name: (known.index(name) if name in known else len(known), name)
    ):
        title, own = BACKENDS.get(backend, (backend, ()))
        lines.append(f"### {title}\n")
        lines.append("| scenario | " + " | ".join(name for _, name in (*COLUMNS, *own)) + " | result |")
        lines.append("| --- " * (len(COLUMNS) + len(own) + 2) + "|")
        for row, result in zip(rows, results, strict=True):
            if backend_of(row) == backend:
                cells = [cell(row, key) for key, _ in COLUMNS] + [extra_cell(row, key) for key, _ in own]
                lines.append("| " + " | ".join([str(row["scenario"]), *cells, result]) + " |")
        lines.append("")
    details = [row for row in rows if row.get("extra") or row.get("notes")]
    if details:
        lines.append("## Scenario details\n")
        for row in details:
            facts = {**(row.get("extra") or {}), **({"notes": row["notes"]} if row.get("notes") else {})}
            rendered = ", ".join(f"{key} {json.dumps(value)}" for key, value in facts.items())
            lines.append(f"- **{row['scenario']}**: {rendered}")
        lines.append("")
    return "\n".join(lines)


def _tally(outcomes: Mapping[str, Mapping[str, Any]]) -> str:
    counts = Counter(str(line["outcome"]) for line in outcomes.values())
    if not counts:
        return "no outcomes recorded"
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) + f" (of {len(outcomes)})"


def problems(rows: Sequence[Mapping[str, Any]], outcomes: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per reason the run is not a pass: a scenario not passed, a test failed, nothing recorded."""
    found = [
        f"{row['scenario']}: {result}"
        for row, result in zip(rows, verdicts(rows, outcomes), strict=True)
        if result != "pass"
    ]
    found += [f"{test}: failed" for test, line in sorted(outcomes.items()) if line["outcome"] == "failed"]
    if not rows:
        found.append("no scenario recorded its figures")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "results",
        nargs="*",
        type=Path,
        help=f"JSON-lines results files (default: ${RESULTS_ENV})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="page to write (default: %(default)s)")
    parser.add_argument(
        "--profile", choices=("full", "fast", "any"), default="full", help="which runs to report"
    )
    args = parser.parse_args(argv)
    paths = args.results or ([Path(os.environ[RESULTS_ENV])] if os.environ.get(RESULTS_ENV) else [])
    if not paths:
        parser.error(f"name a results file or set {RESULTS_ENV}")
    lines = load(paths)
    rows = latest_per_scenario(lines, args.profile)
    outcomes = latest_outcomes(lines, args.profile)
    args.out.write_text(render(rows, outcomes, args.profile))
    found = problems(rows, outcomes)
    for problem in found:
        print(f"chaos: {problem}", file=sys.stderr)
    print(f"{args.out}: {len(rows)} scenarios, {len(found)} problems", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
