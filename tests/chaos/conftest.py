"""Each chaos test's outcome and commit, beside its figures in RELAY_CHAOS_RESULTS, for the report."""

import os
from collections.abc import Generator

import pytest

from scripts.revision import revision
from tests.chaos.harness import PROFILE, RESULTS_ENV, record_result

PHASES = pytest.StashKey[dict[str, str]]()
# Taken at collection: the code the tests run on, not whatever is checked out when the report is made.
REVISION = revision() if os.environ.get(RESULTS_ENV) else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    phases = item.stash.setdefault(PHASES, {})
    phases[report.when] = report.outcome
    if report.when == "teardown" and os.environ.get(RESULTS_ENV):
        record_result(
            {
                "test": item.nodeid,
                "outcome": overall(phases),
                "profile": PROFILE.name,
                "commit": REVISION,
            }
        )
    return report


def overall(phases: dict[str, str]) -> str:
    """A test failed if any of its phases did (setup, call, teardown); skipped if one was skipped."""
    for outcome in ("failed", "skipped"):
        if outcome in phases.values():
            return outcome
    return "passed"
