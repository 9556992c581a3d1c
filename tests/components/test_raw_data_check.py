import os
import shutil

import pytest

from components.keys import DATA_ROOT_KEY, REPORT_KEY, SCENARIOS_KEY
from components.raw_data_check import checks
from components.raw_data_check.checks import RawDataError
from synthetic import generate as G
from tests.csv_edit import edit_line as _edit_line
from tests.csv_edit import set_cell as _set_column


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("raw") / "data")
    G.generate(root, G.GeneratorConfig(rows=3000, days=2, seed=3), progress=False)
    return root


@pytest.fixture
def data(pristine, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(pristine, root)
    return root


def test_generated_data_pass(data):
    report = checks.check_data_root(data)
    assert report["rows"] == 3000 and sorted(report["spans"]) == [0, 1]


def test_missing_data_folder(tmp_path):
    with pytest.raises(RawDataError, match=r"nowhere: data folder does not exist"):
        checks.check_data_root(str(tmp_path / "nowhere"))


def test_folder_without_spans(tmp_path):
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(RawDataError, match=r"no span folders \(day=N/\*.csv\)"):
        checks.check_data_root(str(tmp_path))


def test_empty_file(data):
    path = os.path.join(data, "day=1", "part-00000.csv")
    open(path, "w").close()
    with pytest.raises(RawDataError, match=r"day=1/part-00000.csv: file is empty"):
        checks.check_data_root(data)


def test_header_only_file(data):
    path = os.path.join(data, "day=1", "part-00000.csv")
    with open(path) as f:
        header = f.readline()
    with open(path, "w") as f:
        f.write(header)
    with pytest.raises(RawDataError, match=r"part-00000.csv: file is empty \(a header and no rows\)"):
        checks.check_data_root(data)


def test_row_with_wrong_number_of_columns(data):
    path = os.path.join(data, "day=0", "part-00000.csv")
    _edit_line(path, 7, lambda line: line + ",extra")
    with pytest.raises(RawDataError, match=r"day=0/part-00000.csv, line 7: expected 25 columns, found 26"):
        checks.check_data_root(data)


def test_non_numeric_label(data):
    path = os.path.join(data, "day=0", "part-00000.csv")
    _set_column(path, 12, "click", "yes")
    with pytest.raises(RawDataError, match=r"part-00000.csv, line 12: column 'click' is 'yes', not an integer"):
        checks.check_data_root(data)


def test_label_out_of_range_and_conversion_without_click(data):
    path = os.path.join(data, "day=0", "part-00000.csv")
    _set_column(path, 5, "cart", "2")
    with pytest.raises(RawDataError, match=r"line 5: label 'cart' is 2, not 0 or 1"):
        checks.check_data_root(data)
    _set_column(path, 5, "cart", "0")
    _set_column(path, 5, "click", "0")
    _set_column(path, 5, "conversion", "1")
    with pytest.raises(RawDataError, match=r"line 5: 'conversion' is 1 without a click"):
        checks.check_data_root(data)


def test_unknown_scenario(data):
    path = os.path.join(data, "day=1", "part-00000.csv")
    _set_column(path, 30, "scenario_id", "moon_page")
    with pytest.raises(RawDataError, match=r"day=1/part-00000.csv, line 30: unknown scenario 'moon_page'"):
        checks.check_data_root(data)


def test_non_numeric_feature_and_missing_key(data):
    path = os.path.join(data, "day=0", "part-00000.csv")
    _set_column(path, 4, "day", "monday")
    with pytest.raises(RawDataError, match=r"line 4: column 'day' is 'monday', not an integer"):
        checks.check_data_root(data)
    _set_column(path, 4, "day", "0")
    _set_column(path, 4, "user_id", "")
    with pytest.raises(RawDataError, match=r"line 4: required column 'user_id' is empty"):
        checks.check_data_root(data)


def test_bad_scenarios_file(data):
    path = os.path.join(data, "scenarios.csv")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("home_feed,super", "home_feed,main"))
    with pytest.raises(RawDataError, match=r"scenarios.csv, line 2: role 'main' of scenario 'home_feed'"):
        checks.check_data_root(data)
    os.remove(path)
    with pytest.raises(RawDataError, match=r"scenarios.csv: scenarios file not found"):
        checks.check_data_root(data)


def test_mismatched_headers(data):
    path = os.path.join(data, "day=1", "part-00000.csv")
    _edit_line(path, 1, lambda line: line.replace("user_id,item_id", "item_id,user_id"))
    with pytest.raises(RawDataError, match=r"day=1/part-00000.csv: header differs"):
        checks.check_data_root(data)


def test_executor_on_a_non_local_data_folder_emits_the_report_and_the_scenario_table(pristine):
    import json

    from tfx.dsl.io import fileio

    from components.artifacts import RawDataReport, ScenarioTable
    from components.raw_data_check.driver import data_fingerprint
    from components.raw_data_check.executor import Executor
    from schemas.scenarios import read_scenario_table, read_scenarios
    from tests.components import artifact, ram_dir, to_ram

    root = to_ram(pristine)
    report, table = artifact(RawDataReport, ram_dir("report")), artifact(ScenarioTable, ram_dir("scenarios"))
    Executor().Do({}, {REPORT_KEY: [report], SCENARIOS_KEY: [table]}, {DATA_ROOT_KEY: root})
    with fileio.open(os.path.join(report.uri, "report.json")) as f:
        assert json.loads(f.read())["rows"] == 3000
    expected = read_scenarios(os.path.join(pristine, "scenarios.csv"))
    assert read_scenario_table(table.uri) == expected
    assert table.get_int_custom_property("scenarios") == len(expected)
    assert expected[table.get_string_custom_property("super_scenario")]["role"] == "super"
    # The driver's fingerprint (the cache key): stable, and changed by any file's change.
    before = data_fingerprint(root)
    assert data_fingerprint(root) == before
    with fileio.open(os.path.join(root, "day=0", "extra.csv"), "w") as f:
        f.write("x\n")
    assert data_fingerprint(root) != before
