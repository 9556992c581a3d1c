import html
import json

from components.evaluation_report.report import LEGEND, tables, write_report
from components.keys import RELAIMPR_BASE_KEY, REPORT_KEY, TRANSFER_REPORT_KEY
from components.model_evaluator import metrics as M

ROLES = {"home": "super", "feed_a": "homogeneous", "tiny": "minor"}


def _cell(value, ci=None, positives=None, negatives=None):
    """One slice's metrics as slice_metrics writes them; without ci, as records before intervals were."""
    m = {"rows": 1000, "positives": positives or 300, "auc": value, "gauc": value - 0.05, "logloss": 0.5,
         "calibration": 1.0, "oracle_auc": 0.8}
    if ci is not None:
        m.update(negatives=negatives or 700, auc_ci=list(ci), gauc_ci=[ci[0] - 0.05, ci[1] - 0.05],
                 readable=min(positives or 300, negatives or 700) >= M.MIN_CLASS)
    return m


def _record(name, per_slice):
    metrics = {s: {t: c for t in M.TASKS} for s, c in per_slice.items()}
    return {"model_name": name, "tasks": list(M.TASKS), "cluster_by_scenario": {}, "metrics": metrics,
            "groups": {k: M.group_means(metrics, ROLES, k) for k in ("auc", "gauc")}, "roles": ROLES,
            "blessings": {name: {"blessed": True, "reason": "auc_click 0.7120 beats chance", "slice": "ALL"}}}


def _evaluations():
    new = _record("new", {"ALL": _cell(0.712, (0.701, 0.723)), "feed_a": _cell(0.7, (0.68, 0.72)),
                          "tiny": _cell(0.69, (0.61, 0.77), positives=10, negatives=90)})
    old = _record("old", {"ALL": _cell(0.7), "feed_a": _cell(0.65), "tiny": _cell(0.6)})
    return {"new": new, "old": old}


def _row(rows, first):
    return next(r for r in rows if r[0] == first)


def test_cells_show_intervals_and_mark_small_slices():
    tabs = tables(_evaluations(), base="old")
    auc = tabs["click AUC"]
    new, old = auc[0].index("new"), auc[0].index("old")
    assert _row(auc, "ALL")[new] == "0.712 [0.701, 0.723]"
    assert _row(auc, "tiny")[new] == "0.690 [0.610, 0.770] (small)"
    assert _row(auc, "ALL")[old] == "0.700" and _row(auc, "tiny")[old] == "0.600"  # older records: value alone
    assert _row(auc, "mean homogeneous")[new] == "0.700"  # group means carry no interval
    all_rows = tabs["ALL: AUC, GAUC, LogLoss, calibration"]
    assert _row(all_rows, "new")[2:4] == ["0.712 [0.701, 0.723]", "0.662 [0.651, 0.673]"]
    assert _row(all_rows, "old")[2:4] == ["0.700", "0.650"]


def test_every_output_has_the_cells_and_the_legend(tmp_path):
    files = write_report(_evaluations(), str(tmp_path), base="old")
    md, txt = open(files["markdown"]).read(), open(files["text"]).read()
    page = open(files["html"]).read()
    for cell in ("0.712 [0.701, 0.723]", "0.690 [0.610, 0.770] (small)"):
        assert cell in md and cell in txt and html.escape(cell) in page
    # Under each AUC table and the ALL table; not under the blessing table.
    assert md.count(LEGEND) == txt.count(LEGEND) == page.count(html.escape(LEGEND)) == len(M.TASKS) + 1
    assert f"\n{LEGEND}\n" in md and not LEGEND.startswith("[")  # a line of its own, no Markdown link definition
    assert str(M.MIN_CLASS) in LEGEND and "95%" in LEGEND
    saved = json.load(open(files["metrics"]))["models"]
    assert saved["new"]["metrics"]["tiny"]["click"]["readable"] is False
    assert saved["new"]["metrics"]["ALL"]["click"]["auc_ci"] == [0.701, 0.723]


def test_the_blessing_table_says_why_a_model_was_refused(tmp_path):
    evaluations = _evaluations()
    reason = ("auc_click 0.700 is below the floor new 0.712 on the same 1,000 rows: difference -0.012 "
              "[-0.020, -0.004] (paired 95%)")
    evaluations["old"]["blessings"]["old"] = {"blessed": False, "reason": reason, "slice": "ALL"}
    files = write_report(evaluations, str(tmp_path), base=None)
    md, txt, page = (open(files[k]).read() for k in ("markdown", "text", "html"))
    assert f"| old | NO | {reason} |" in md and reason in txt and html.escape(reason) in page
    assert md.count(LEGEND) == len(M.TASKS) + 1  # the reason's interval does not put the legend under it


def test_records_without_intervals_render_as_before(tmp_path):
    evaluations = {"old": _evaluations()["old"]}
    files = write_report(evaluations, str(tmp_path), base=None)
    md = open(files["markdown"]).read()
    assert "| ALL |  | 0.800 | 0.700 |" in md
    assert LEGEND not in md and "(small)" not in md and LEGEND not in open(files["text"]).read()


def test_executor_reads_evaluations_and_writes_the_report_on_a_non_local_filesystem():
    from tfx.dsl.io import fileio
    from tfx.types import standard_artifacts

    from components.artifacts import EvaluationReport, TransferReport
    from components.evaluation_report.executor import Executor
    from tests.components import artifact, ram_dir

    inputs = {}
    for name, record in (("keep_general", _evaluations()["new"]), ("shared_bottom", _evaluations()["old"])):
        uri = ram_dir(name)
        fileio.makedirs(uri)
        with fileio.open(f"{uri}/evaluation.json", "w") as f:
            f.write(json.dumps({**record, "model_name": name}))
        inputs[name] = [artifact(standard_artifacts.ModelEvaluation, uri)]
    inputs[TRANSFER_REPORT_KEY] = [artifact(TransferReport, ram_dir("transfer"))]  # no transfer.json: no SAMD plots
    report = artifact(EvaluationReport, ram_dir("report"))
    Executor().Do(inputs, {REPORT_KEY: [report]}, {RELAIMPR_BASE_KEY: "shared_bottom"})
    names = set(fileio.listdir(report.uri))
    assert {"report.md", "report.html", "report.txt", "metrics.json", "auc_click.png"} <= names
    assert "samd_transfer_weights.png" not in names
    with fileio.open(f"{report.uri}/metrics.json") as f:
        saved = json.loads(f.read())
    assert list(saved["models"]) == ["keep_general", "shared_bottom"] and saved["relaimpr_base"] == "shared_bottom"
    with fileio.open(f"{report.uri}/auc_click.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_learning_curves_are_drawn_for_the_models_that_recorded_them(tmp_path):
    evaluations = _evaluations()
    evaluations["new"]["budget"] = {"epochs": 3, "best_epoch": 2, "history": {
        "loss": [0.6, 0.5, 0.45], "val_loss": [0.62, 0.55, 0.58], "auc_click": [0.6, 0.7, 0.75],
        "val_auc_click": [0.6, 0.68, 0.66]}}
    files = write_report(evaluations, str(tmp_path), base="old")
    assert open(files["learning_curves.png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "learning_curves.png" in open(files["html"]).read()
    del evaluations["new"]["budget"]
    assert "learning_curves.png" not in write_report(evaluations, str(tmp_path / "none"), base="old")
