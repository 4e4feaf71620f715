"""scripts/chaos_report.py: merges every suite's result lines and writes the reliability page."""

import json
from pathlib import Path
from typing import Any

from scripts.chaos_report import latest_per_scenario, load, main


def row(scenario: str, **fields: Any) -> dict[str, Any]:
    base = {"scenario": scenario, "profile": "full", "sent": 10, "acknowledged": 10, "delivered": 10}
    return {**base, "delivered_twice": 0, "lost": 0, **fields}


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
        row("1. kill storm", seed=42, stored_webhooks=11, stored_deliveries=10, run_time_s=12.5, cores=2),
        row("8. split", lost=1, delivered=9, python="3.11.7", cores=2),
    )
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    page = out.read_text()
    assert "| 1. kill storm | 10 | 10 | 11 / 10 | 10 | 0 | 0 | 12.5 | pass |" in page
    assert "| 8. split | 10 | 10 | – | 9 | 0 | 1 | – | FAIL |" in page
    assert "1. kill storm: 42" in page


def test_no_results_of_the_profile_is_said_and_fails(tmp_path: Path):
    results = write_lines(tmp_path / "r.jsonl", row("1. kill storm", profile="fast"))
    out = tmp_path / "reliability.md"
    assert main([str(results), "--out", str(out)]) == 1
    assert "No results of the `full` profile yet" in out.read_text()
