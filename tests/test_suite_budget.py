from types import SimpleNamespace

import pytest

from tests import suite_budget

TWO_TESTS = """
def test_one():
    pass

def test_two():
    pass
"""


def _report(nodeid, when, duration):
    return SimpleNamespace(nodeid=nodeid, when=when, duration=duration)


def test_slowest_adds_setup_call_and_teardown_and_keeps_the_longest():
    reports = [_report("a", "setup", 50.0), _report("a", "call", 1.0), _report("a", "teardown", 0.5),
               _report("b", "call", 40.0), _report("c", "call", 2.0), _report("c", "teardown", 60.0),
               SimpleNamespace(nodeid="a", duration=100.0)]  # a collect report (no `when`): not a test's time
    assert suite_budget.slowest(reports, n=2) == [("c", 62.0), ("a", 51.5)]


def test_budget_comes_from_the_environment_and_a_bad_value_is_a_usage_error():
    assert suite_budget.budget_minutes({}) == suite_budget.DEFAULT_BUDGET_MINUTES
    assert suite_budget.budget_minutes({suite_budget.BUDGET_ENV: "12.5"}) == 12.5
    with pytest.raises(pytest.UsageError, match="KEEP_SAMD_TEST_BUDGET_MINUTES='soon'"):
        suite_budget.budget_minutes({suite_budget.BUDGET_ENV: "soon"})


def test_within_budget_the_summary_prints_the_wall_time_and_no_warning(pytester, monkeypatch):
    monkeypatch.setenv(suite_budget.BUDGET_ENV, "600")
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest_subprocess("-p", "tests.suite_budget")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*suite wall time: 0 min * s (budget 600 min, KEEP_SAMD_TEST_BUDGET_MINUTES)*"])
    assert "WARNING" not in result.stdout.str()


def test_past_the_budget_a_loud_warning_names_the_slowest_tests_and_the_run_still_passes(pytester, monkeypatch):
    monkeypatch.setenv(suite_budget.BUDGET_ENV, "0")
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest_subprocess("-p", "tests.suite_budget")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*WARNING: the test suite took 0 min * s, over its 0-minute budget*",
                                 "*slowest tests*", "* s  test_past_the_budget*.py::test_*"])
