"""scripts/chaos_report.py: merges every suite's result lines and writes the reliability page."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scripts.chaos_report import latest_per_scenario, load, main
from scripts.revision import revision

ROOT = Path(__file__).resolve().parents[1]


def row(scenario: str, **fields: Any) -> dict[str, Any]:
    base = {"scenario": scenario, "profile": "full", "sent": 10, "acknowledged": 10, "delivered": 10}
    return {**base, "delivered_twice": 0, "lost": 0, **fields}


def outcome(test: str, result: str = "passed", **fields: Any) -> dict[str, Any]:
    return {"test": test, "outcome": result, "profile": "full", "commit": "abc1234", **fields}


def write_lines(path: Path, *rows: dict[str, Any] | str) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_each_test_keeps_only_its_latest_run_however_its_scenarios_are_named(tmp_path: Path):
    rows = load(
        [
            write_lines(
                tmp_path / "r.jsonl",
                row("4. flaky (old name)", test="t.py::flaky", run="a"),
                row("6. storage: locked", test="s.py::storage", run="a"),
                row("6. storage: full", test="s.py::storage", run="a"),
                "not json at all",
                row("4. flaky (new name)", test="t.py::flaky", run="b"),
                row("1. kill storm", test="t.py::kill", run="b", profile="fast"),
            )
        ]
    )
    shown = [r["scenario"] for r in latest_per_scenario(rows, "full")]
    assert shown == ["4. flaky (new name)", "6. storage: full", "6. storage: locked"]


def test_lines_without_a_test_name_give_way_to_a_newer_named_line_of_their_number(tmp_path: Path):
    rows = load(
        [
            write_lines(
                tmp_path / "r.jsonl",
                row("2. graceful stops (old)"),
                row("3. outage"),
                row("2. graceful stops (new)", test="t.py::graceful", run="b"),
            )
        ]
    )
    assert [r["scenario"] for r in latest_per_scenario(rows, "full")] == [
        "2. graceful stops (new)",
        "3. outage",
    ]


def test_the_page_holds_the_figures_and_fails_the_run_when_a_rating_was_lost(tmp_path: Path):
    results = write_lines(
        tmp_path / "r.jsonl",
        row(
            "1. kill storm",
            seed=42,
            stored_webhooks=11,
            stored_deliveries=10,
            run_time_s=12.5,
            cores=2,
            test="k",
            run="a",
        ),
        outcome("k", run="a"),
        row("8. split", lost=1, delivered=9, python="3.11.7", cores=2, test="s", run="a"),
        outcome("s", "failed", run="a"),
    )
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    page = out.read_text()
    assert "| 1. kill storm | 10 | 10 | 11 / 10 | 10 | 0 | 0 | 12.5 | pass |" in page
    assert "| 8. split | 10 | 10 | – | 9 | 0 | 1 | – | FAIL (lost or sent twice) |" in page
    assert "1. kill storm: 42" in page


def test_a_scenario_whose_test_failed_is_a_failure_though_nothing_was_lost(tmp_path: Path):
    results = write_lines(
        tmp_path / "r.jsonl",
        row("2. graceful stops", test="t.py::graceful", run="a"),
        outcome("t.py::graceful", "failed", run="a"),
    )
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    page = out.read_text()
    assert "| 2. graceful stops | 10 | 10 | – | 10 | 0 | 0 | – | FAIL (test failed) |" in page
    assert "failed: `t.py::graceful`" in page


def test_a_failed_test_of_a_barrage_that_the_last_test_sums_up_fails_its_scenario(tmp_path: Path):
    results = write_lines(
        tmp_path / "r.jsonl",
        outcome("h.py::test_junk_headers[x]", "failed", run="a"),
        outcome("h.py::test_slow_clients", run="a"),
        row("7. hostile input", test="h.py::test_after_the_barrage", run="a"),
        outcome("h.py::test_after_the_barrage", run="a"),
        row("1. kill storm", test="d.py::test_kill", run="a"),
        outcome("d.py::test_kill", run="a"),
        row("2. graceful stops", test="d.py::test_graceful", run="a"),
        outcome("d.py::test_graceful", "failed", run="a"),
    )
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    page = out.read_text()
    assert (
        "| 7. hostile input | 10 | 10 | – | 10 | 0 | 0 | – | FAIL (1 other tests of its file failed) |"
        in page
    )
    assert "| 1. kill storm | 10 | 10 | – | 10 | 0 | 0 | – | pass |" in page


def test_figures_without_a_recorded_outcome_are_not_called_a_pass(tmp_path: Path):
    results = write_lines(
        tmp_path / "r.jsonl", row("3. outage"), row("4. flaky", test="t.py::flaky", run="a")
    )
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    assert out.read_text().count("unknown (no test outcome recorded)") == 2


def test_a_later_run_that_failed_before_its_figures_hides_the_older_figures(tmp_path: Path):
    results = write_lines(
        tmp_path / "r.jsonl",
        row("1. kill storm", test="t.py::kill", run="a"),
        outcome("t.py::kill", run="a"),
        outcome("t.py::kill", "failed", run="b"),
    )
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    page = out.read_text()
    assert "| 1. kill storm |" not in page
    assert "failed: `t.py::kill`" in page


def test_the_page_names_the_commit_the_tests_ran_on(tmp_path: Path):
    results = write_lines(
        tmp_path / "r.jsonl",
        row("1. kill storm", test="k", run="a"),
        outcome("k", run="a", commit="0123abc with uncommitted changes"),
    )
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 0
    assert "- Commit: 0123abc with uncommitted changes" in out.read_text()


def test_pytests_outcome_reaches_the_results_beside_the_figures(tmp_path: Path):
    """Through pytest itself with the chaos suite's hook: a test that records clean figures and then fails
    on another assertion is reported as a failure, on the commit checked out."""
    (tmp_path / "test_scenarios.py").write_text(
        "from tests.chaos.harness import record_result\n"
        "FIGURES = {'profile': 'full', 'sent': 5, 'acknowledged': 5, 'delivered': 5, 'lost': 0,"
        " 'delivered_twice': 0}\n"
        "def test_clean_then_broken():\n"
        "    record_result({'scenario': '2. graceful stops', **FIGURES})\n"
        "    assert False, 'a stop took longer than the grace time'\n"
        "def test_clean():\n"
        "    record_result({'scenario': '3. outage', **FIGURES})\n"
    )
    results = tmp_path / "results.jsonl"
    env = {**os.environ, "RELAY_CHAOS": "full", "RELAY_CHAOS_RESULTS": str(results), "PYTHONPATH": str(ROOT)}
    pytest_run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "tests.chaos.conftest", "-p", "no:cacheprovider"),
            *("--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_scenarios.py")),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pytest_run.returncode == 1, pytest_run.stdout + pytest_run.stderr
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    page = out.read_text()
    assert "| 2. graceful stops | 5 | 5 | – | 5 | 0 | 0 | – | FAIL (test failed) |" in page
    assert "| 3. outage | 5 | 5 | – | 5 | 0 | 0 | – | pass |" in page
    assert f"- Commit: {revision()}" in page
    assert "- Tests: 1 failed, 1 passed (of 2)" in page


def test_the_revision_is_the_commit_and_says_when_the_tree_differs(tmp_path: Path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "docs" / "reliability.md").write_text("old\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
    head = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    (tmp_path / "docs" / "reliability.md").write_text("a fresh report\n")
    (tmp_path / "scratch.log").write_text("untracked\n")
    assert revision(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert revision(tmp_path) == f"{head} with uncommitted changes"


def test_no_results_of_the_profile_is_said_and_fails(tmp_path: Path):
    results = write_lines(tmp_path / "r.jsonl", row("1. kill storm", profile="fast"))
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    assert "No results of the `full` profile yet" in out.read_text()


def test_each_backend_has_its_table_and_postgresql_shows_its_own_figures(tmp_path: Path):
    results = write_lines(
        tmp_path / "r.jsonl",
        row("1. kill storm", test="d.py::kill", run="a"),
        outcome("d.py::kill", run="a"),
        row(
            "10. PostgreSQL fleet",
            backend="postgresql",
            extra={
                "restarts": 3,
                "database_stops": [{"mode": "fast"}, {"mode": "immediate"}],
                "most_sends_at_once_per_inquiry": 1,
            },
            test="p.py::fleet",
            run="a",
        ),
        outcome("p.py::fleet", run="a"),
    )
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 0
    page = out.read_text()
    sqlite, postgresql = page.split("### SQLite\n", 1)[1].split("### PostgreSQL\n", 1)
    assert "| 1. kill storm | 10 | 10 | – | 10 | 0 | 0 | – | pass |" in sqlite
    assert "10. PostgreSQL fleet" not in sqlite
    assert "| most sends at once per inquiry | result |" in postgresql
    assert "| 10. PostgreSQL fleet | 10 | 10 | – | 10 | 0 | 0 | – | 3 | 2 | 1 | pass |" in postgresql
