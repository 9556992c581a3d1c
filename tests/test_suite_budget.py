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


SHARED_CONFTEST = """
import os

import pytest

from tests.conftest import once_per_session


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    def build(folder):
        with open(os.path.join(os.environ["RUNS_LOG"], os.environ.get("PYTEST_XDIST_WORKER", "main")), "a") as f:
            f.write("built\\n")
        if os.environ.get("BUILD_FAILS"):
            raise RuntimeError("no data")
        return {"folder": folder}

    return once_per_session(tmp_path_factory, "shared", build)
"""

USES_SHARED = """
import pytest


@pytest.mark.parametrize("i", range(3))
def test_reads_it(shared, i):
    assert shared["folder"].endswith("once-shared")
"""


def _two_workers_on_two_files(pytester, tmp_path, monkeypatch, **env):
    for name, value in {"RUNS_LOG": str(tmp_path), **env}.items():
        monkeypatch.setenv(name, value)
    pytester.makeconftest(SHARED_CONFTEST)
    pytester.makepyfile(test_a=USES_SHARED, test_b=USES_SHARED)
    # Both workers ask at once (one file each), as make test's workers do.
    return pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider")


def test_a_shared_run_is_built_once_for_all_the_workers(pytester, tmp_path, monkeypatch):
    result = _two_workers_on_two_files(pytester, tmp_path, monkeypatch)
    result.assert_outcomes(passed=6)
    builds = [p.read_text() for p in tmp_path.iterdir()]
    assert builds == ["built\n"], builds


def test_a_failed_shared_build_fails_the_other_workers_tests_without_building_again(pytester, tmp_path,
                                                                                    monkeypatch):
    result = _two_workers_on_two_files(pytester, tmp_path, monkeypatch, BUILD_FAILS="1")
    result.assert_outcomes(errors=6)
    assert len(list(tmp_path.iterdir())) == 1
    result.stdout.fnmatch_lines(["*RuntimeError: no data*"])
    result.stdout.fnmatch_lines(["*shared: the build failed in another worker: RuntimeError: no data*"])
