import os
import sys

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytest_plugins = ["pytester", "tests.suite_budget"]

# Markers (registered in pytest.ini): `e2e` on the pipeline-running modules of tests/pipelines; `slow` on
# any test that needs one of these fixtures, so a new user of them is marked without anyone
# remembering to.
SLOW_FIXTURES = ("transformed",)
# The test that records where the end-to-end figures are (read back by the terminal summary).
KEEP_E2E_PROPERTY = "keep_e2e_report"


def once_per_session(tmp_path_factory, name, build):
    """`build(folder)`'s result (JSON), built once per test session, also under pytest-xdist.

    Each xdist worker is a session of its own with its own session fixtures: the first
    worker to ask builds in a folder all the workers share, under a file lock; the others
    wait and read the result. A failed build is recorded, so the others fail at once with
    its error instead of building again over its half-written folder."""
    import fcntl
    import json

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the controller's temporary folder, above each worker's
    folder = base / f"once-{name}"
    with open(base / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done, failed = folder / "result.json", folder / "failed.txt"
        if failed.exists():
            pytest.fail(f"{name}: the build failed in another worker: {failed.read_text()}")
        if done.exists():
            return json.loads(done.read_text())
        folder.mkdir(exist_ok=True)
        try:
            result = build(str(folder))
        except BaseException as e:
            failed.write_text(f"{type(e).__name__}: {e}")
            raise
        done.write_text(json.dumps(result))
        return result


def pytest_addoption(parser):
    parser.addoption("--reverse", action="store_true",
                     help="run the collected tests in reverse order (to catch tests that depend on order)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in item.fixturenames for name in SLOW_FIXTURES):
            item.add_marker(pytest.mark.slow)
    if config.getoption("--reverse"):
        items.reverse()
    # Longest first: `make test` hands out whole files (xdist's loadfile, so a module's shared
    # run happens once) in this order (--no-loadscope-reorder): the pipeline runs start at once
    # and the short tests fill in around them. Stable: within a rank the collected (or
    # reversed) order stays.
    items.sort(key=_rank)


def _rank(item) -> int:
    if item.get_closest_marker("e2e"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


@pytest.fixture(autouse=True)
def seeded_random_generators():
    """Every test starts from the same Python, NumPy and TF random state.

    tf_keras initializers without a seed draw theirs from Python's `random`, which
    `tf.random.set_seed` does not reset: without this, a model's initial weights depend on
    which tests ran before it in the same xdist worker."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def transformed(tmp_path_factory):
    """(data root, TransformResult) of a small generated data set (slow: one Transform run, once per
    session also when several xdist workers ask for it)."""
    import dataclasses

    from pipelines.transform_only import TransformResult, run_transform
    from synthetic import generate as G

    def build(tmp):
        data = os.path.join(tmp, "data")
        G.generate(data, G.GeneratorConfig(rows=4000, days=4, seed=11), progress=False)
        return {"data": data, "result": dataclasses.asdict(run_transform(data, tmp))}

    built = once_per_session(tmp_path_factory, "transformed", build)
    return built["data"], TransformResult(**built["result"])


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
