import os
import sys

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Markers (registered in pytest.ini): `e2e` on tests/pipelines/test_pipeline_e2e.py; `slow` on
# any test that needs one of these fixtures, so a new user of them is marked without anyone
# remembering to.
SLOW_FIXTURES = ("transformed",)

_REPORTS = pytest.StashKey[str]()


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order (to catch tests that depend on order)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in item.fixturenames for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
    if config.getoption("--reverse"):
        items.reverse()


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
    path = str(tmp_path_factory.mktemp("test-reports"))
    request.config.stash[_REPORTS] = path
    return path


def pytest_terminal_summary(terminalreporter):
    """Shows the figures end-to-end tests measured (e.g. KEEP's AUC vs the oracle)."""
    import json

    folder = terminalreporter.config.stash.get(_REPORTS, None)
    path = os.path.join(folder, "keep_e2e.json") if folder else None
    if path is None or not os.path.exists(path):
        return
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
