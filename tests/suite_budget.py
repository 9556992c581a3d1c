"""The test suite's time budget: the summary prints the suite's wall time and, past the budget,
a loud warning naming the slowest tests.

A warning, not a failure: CI's machines differ in speed by 2x or more, so a time limit
would fail one machine on a commit that passes on the next. The warning is there so that
a change which adds a slow test sees it in its own CI run.

A pytest plugin (loaded by tests/conftest.py). The budget is `KEEP_SAMD_TEST_BUDGET_MINUTES`
(default 30). Under xdist, the controller reports: the workers' test reports, with their
durations, reach it.
"""

import collections
import os
import time
from typing import Dict, Iterable, List, Tuple

import pytest

BUDGET_ENV = "KEEP_SAMD_TEST_BUDGET_MINUTES"
DEFAULT_BUDGET_MINUTES = 30.0
SLOWEST_SHOWN = 10

_START = pytest.StashKey[float]()


def budget_minutes(environ=os.environ) -> float:
    value = environ.get(BUDGET_ENV, "")
    if not value:
        return DEFAULT_BUDGET_MINUTES
    try:
        return float(value)
    except ValueError:
        raise pytest.UsageError(f"{BUDGET_ENV}={value!r}: not a number of minutes") from None


def slowest(reports: Iterable, n: int = SLOWEST_SHOWN) -> List[Tuple[str, float]]:
    """[(test id, seconds)], the `n` longest, from pytest's reports (setup + call + teardown of each test).

    A module- or session-scoped fixture's setup (e.g. a pipeline run) counts in the first test that used it."""
    total: Dict[str, float] = collections.defaultdict(float)
    for report in reports:
        if getattr(report, "when", None) in ("setup", "call", "teardown"):
            total[report.nodeid] += report.duration
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def pytest_configure(config):
    budget_minutes()  # a bad value is a usage error at the start, not at the end of a long run
    config.stash[_START] = time.monotonic()


@pytest.hookimpl(trylast=True)  # after --durations' table: the last thing before the pass/fail line
def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller reports
        return
    elapsed = time.monotonic() - config.stash[_START]
    budget = budget_minutes()
    reports = [r for rs in terminalreporter.stats.values() for r in rs]
    terminalreporter.section("suite time")
    terminalreporter.write_line(f"suite wall time: {_minutes(elapsed)} (budget {budget:g} min, {BUDGET_ENV})")
    if elapsed < budget * 60:
        return
    bar = "!" * 78
    terminalreporter.write_line(bar, red=True, bold=True)
    terminalreporter.write_line(
        f"WARNING: the test suite took {_minutes(elapsed)}, over its {budget:g}-minute budget. CI's limit is 90 "
        "minutes on machines up to 2x slower than this one: share pipeline runs between tests (a session- or "
        "module-scoped fixture), shrink their data, train no longer than the assertion needs.",
        red=True, bold=True)
    terminalreporter.write_line("slowest tests (setup + call + teardown):", red=True, bold=True)
    for nodeid, seconds in slowest(reports):
        terminalreporter.write_line(f"  {seconds:8.1f} s  {nodeid}", red=True)
    terminalreporter.write_line(bar, red=True, bold=True)
