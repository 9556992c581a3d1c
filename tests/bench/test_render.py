"""docs/benchmarks.md and the README's figures are rendered from bench/results/*.json, and current."""

import json
import shutil

import pytest

from bench import render

STALE = "stale: run python -m bench.render"


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _readme_figures(text):
    start, end = text.index(render.README_START) + len(render.README_START), text.index(render.README_END)
    return text[start:end].strip()


def test_the_benchmarks_page_is_the_rendered_one():
    assert _read(render.PAGE) == render.render(), f"docs/benchmarks.md is {STALE}"


def test_the_readme_figures_are_the_rendered_ones():
    rows = render.readme_table(render.load())
    assert _readme_figures(_read(render.README)) == rows, f"README.md's figures table is {STALE}"
    assert 8 <= len(rows.splitlines()) - 2 <= 12  # a newcomer's table: at most about a dozen one-line rows


def test_a_changed_figure_makes_both_stale(tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(render.RESULTS, results)
    quality = json.loads((results / "quality.json").read_text())
    quality["models"]["pepnet"]["ALL"]["click"]["auc"]["mean"] = 0.9876
    (results / "quality.json").write_text(json.dumps(quality))
    monkeypatch.setattr(render, "RESULTS", str(results))

    std = quality["models"]["pepnet"]["ALL"]["click"]["auc"]["std"]
    assert f"0.988 ± {std:.3f}" in render.render()
    assert "PEPNet 0.988" in render.readme_table(render.load())
    assert render.main(["--check"]) == 1


def test_a_new_results_file_gets_a_section_without_code(tmp_path):
    (tmp_path / "zz_new.json").write_text(json.dumps({
        "machine": "x86_64, 64 cores", "load_average_1m": [0.5],
        "command": "python -m bench.zz_new --rows 10",
        "notes": ["measured on a laptop"],
        "results": [{"rows": 10, "seconds": 1.23456}, {"rows": 20, "seconds": 2.5}],
        "nested": {"depth": {"value": 0.123456}, "names": ["a", "b"]},
        "findings": [{"finding": "twice the rows, twice the time", "command": "python -m bench.zz_new --rows 20"}],
    }))
    (tmp_path / "aa_old.json").write_text(json.dumps({"description": "What aa measures.", "value": 7}))
    page = render.render(str(tmp_path))

    assert page.index("## aa_old") < page.index("## zz_new")  # sections sorted by file name
    section = page[page.index("## zz_new"):]
    for expected in ("(no description: add a `description` to the file)", "Command: `python -m bench.zz_new --rows 10`",
                     "Machine: x86_64, 64 cores; load_average_1m 0.5.", "Note: measured on a laptop",
                     "| rows | seconds |", "| 10 | 1.23 |", "| 20 | 2.5 |", "| nested.depth.value | 0.123 |",
                     "| nested.names | a, b |",
                     "- twice the rows, twice the time Command: `python -m bench.zz_new --rows 20`."):
        assert expected in section, expected
    assert "What aa measures." in page and "| value | 7 |" in page
    assert render.render(str(tmp_path)) == page


def test_a_bench_module_says_what_its_file_measures():
    assert render.what_it_measures("transform_example_gen", {}).endswith("(`bench/transform.py`)")
    assert render.what_it_measures("x", {"command": "python -m bench.serving M E"}).startswith("Predict through")


@pytest.mark.parametrize("value, text", [(0.75277, "0.753"), (1020.4, "1,020"), (9800, "9,800"), (49.2, "49.2"),
                                         (6.8e-16, "6.80e-16"), (None, "n/a"), (True, "yes")])
def test_numbers_have_one_format(value, text):
    assert render.num(value) == text


def test_learning_rate_rows_average_the_seeds_of_each_model_and_rate():
    from bench.render import render_learning_rate

    runs = [{"data": "d", "model": "keep_general", "rate": 0.003, "seed": s, "best_val_auc_click": auc,
             "best_epoch": e} for s, auc, e in ((0, 0.74, 7), (1, 0.76, 9))]
    runs.append({"data": "d", "model": "keep_general", "rate": 0.001, "seed": 0, "best_val_auc_click": 0.73,
                 "best_epoch": 12})
    lines = render_learning_rate({"runs": runs, "rule": {"epochs": 20, "patience": 2, "eval_steps": 100}})
    rows = [line for line in lines if line.startswith("| d ")]
    assert rows == ["| d | KEEP | 0.003 | 0.7500 | 7, 9 | 2 |", "| d | KEEP | 0.001 | 0.7300 | 12 | 1 |"]
    assert "at most 20 epochs, patience 2" in lines[0]
