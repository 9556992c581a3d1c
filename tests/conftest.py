import os
import sys

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPORTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "test-reports")


_STARTED = [0.0]


@pytest.fixture(scope="session")
def transformed(tmp_path_factory):
    """(data root, TransformResult) of a small generated data set (slow: one Transform run)."""
    from pipelines.transform_only import run_transform
    from synthetic import generate as G

    tmp = str(tmp_path_factory.mktemp("transformed"))
    data = os.path.join(tmp, "data")
    G.generate(data, G.GeneratorConfig(rows=4000, days=4, seed=11), progress=False)
    return data, run_transform(data, tmp)


def pytest_sessionstart(session):
    import time

    _STARTED[0] = time.time()


def pytest_terminal_summary(terminalreporter):
    """Shows the figures end-to-end tests measured (e.g. KEEP's AUC vs the oracle)."""
    import json

    path = os.path.join(REPORTS, "keep_e2e.json")
    if not os.path.exists(path) or os.path.getmtime(path) < _STARTED[0]:
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
