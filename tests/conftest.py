import os
import sys

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytest_plugins = ["pytester", "tests.suite_budget"]

# Markers (registered in pytest.ini): `e2e` on tests/pipelines/test_pipeline_e2e.py; `slow` on
# any test that needs one of these fixtures, so a new user of them is marked without anyone
# remembering to.
SLOW_FIXTURES = ("transformed",)
# Fixtures that run a pipeline once for many tests -> the xdist group of their tests: under
# `pytest -n N --dist loadgroup` (make test) those tests share one worker, so the run happens once.
SHARED_RUNS = {"transformed": "transformed", "pipeline_run": "e2e_pipeline_run"}
# The test that records where the end-to-end figures are (read back by the terminal summary).
KEEP_E2E_PROPERTY = "keep_e2e_report"


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order (to catch tests that depend on order)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in item.fixturenames for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
        group = next((g for name, g in SHARED_RUNS.items() if name in item.fixturenames), None)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    if config.getoption("--reverse"):
        items.reverse()
    # Longest first: xdist hands out work in this order (make test passes --no-loadscope-reorder),
    # so the pipeline runs start at once and the short tests fill in around them. Stable: within
    # a rank the collected (or reversed) order stays.
    items.sort(key=_rank)


def _rank(item) -> int:
    if item.get_closest_marker("e2e"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


@pytest.fixture(scope="session")
def transformed(tmp_path_factory):
    """(data root, TransformResult) of a small generated data set (slow: one Transform run)."""
    from pipelines.transform_only import run_transform
    from synthetic import generate as G

    tmp = str(tmp_path_factory.mktemp("transformed"))
    data = os.path.join(tmp, "data")
    G.generate(data, G.GeneratorConfig(rows=4000, days=4, seed=11), progress=False)
    return data, run_transform(data, tmp)


@pytest.fixture(scope="session")
def reports_dir(request, tmp_path_factory):
    """A folder for figures worth reading after the session (e.g. the e2e KEEP AUCs), under
    pytest's temporary directory; the terminal summary shows what is in it."""
    return str(tmp_path_factory.mktemp("test-reports"))


def pytest_terminal_summary(terminalreporter):
    """Shows the figures end-to-end tests measured (e.g. KEEP's AUC vs the oracle).

    The test that writes them records the file as a user property: its report reaches this
    process also when the test ran in an xdist worker."""
    import json

    paths = [value for reports in terminalreporter.stats.values() for report in reports
             for key, value in getattr(report, "user_properties", ()) if key == KEEP_E2E_PROPERTY]
    path = paths[-1] if paths else None
    if path is None or not os.path.exists(path):
        return
    folder = os.path.dirname(path)
    with open(path) as f:
        report = json.load(f)
    terminalreporter.section("KEEP on the test split (AUC / oracle AUC)")
    for scenario, per in report["scenarios"].items():
        cells = []
        for task in ("click", "conversion", "cart"):
            auc, oracle = per[task]["auc"], per[task]["oracle_auc"]
            cells.append(f"{task} {auc:.3f}/{oracle:.3f}" if auc is not None and oracle is not None else f"{task} n/a")
        terminalreporter.write_line(f"{scenario:>15} rows {per['rows']:>6}  " + "  ".join(cells))
    terminalreporter.write_line(f"reports (this JSON, the evaluation report and its plots): {folder}")
