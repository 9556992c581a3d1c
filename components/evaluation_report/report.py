"""The evaluation report: tables (Markdown, HTML, terminal), metrics.json and PNG plots.

Input: the ModelEvaluator records of one run ({model: evaluation.json}) and,
when SAMD ran, its transfer report (transfer.json). Output files in one folder:

- metrics.json: every record, plus RelaImpr of each model against the chosen base;
- report.md / report.html (and report.txt): per task, AUC per scenario (and role
  group) of every model beside the oracle AUC; GAUC, LogLoss and calibration on
  ALL; the blessings. AUC and GAUC cells carry their 95% interval and a mark on
  slices too small to read (LEGEND, under each table that has them);
- auc_<task>.png: AUC per scenario per model;
- samd_transfer_weights.png: SAMD's W_T^i per scenario as heatmaps (SAMD Fig. 8);
- samd_representations.png: T_i and C_i projected to 2-D by PCA (SAMD Fig. 7);
- <model>_clusters.png: a routed model's (ADL's) share of each scenario per cluster;
- learning_curves.png: each model's train and validation loss and click AUC per epoch, the
  restored (best) epoch marked: under- and over-fitting at a glance.
"""

import html
import os
from typing import Dict, List, Optional

import numpy as np

from models import artifact_io
from components.model_evaluator import metrics as M

TASKS = M.TASKS


SMALL = "(small)"
# Not "[low, high]: ..." at the start: Markdown would take it for a link definition and hide it.
LEGEND = (f"Legend: value [low, high] is the 95% interval (AUC: DeLong; GAUC: bootstrap over users); "
          f"{SMALL}: fewer than {M.MIN_CLASS} positives or negatives in the slice, too small to read.")


def _fmt(v, digits=3):
    return "n/a" if v is None else f"{v:.{digits}f}"


def _fmt_ci(m: Dict, key: str) -> str:
    """m[key] with its interval and the small mark; records written before them show the value alone."""
    v, ci = m.get(key), m.get(f"{key}_ci")
    if v is None:
        return _fmt(v)
    text = _fmt(v) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
    return text + (f" {SMALL}" if m.get("readable") is False else "")


def _legend(rows) -> Optional[str]:
    """LEGEND when a cell of the table carries an interval or the mark (as `_fmt_ci` writes them)."""
    return LEGEND if any(c.endswith(("]", SMALL)) for r in rows[1:] for c in r) else None


def _slices(evaluations: Dict) -> List[str]:
    roles = next(iter(evaluations.values()))["roles"] if evaluations else {}
    scen = sorted({s for r in evaluations.values() for s in r["metrics"] if s != M.ALL},
                  key=lambda s: (list(M.GROUPS).index(roles[s]) + 1 if roles.get(s) in M.GROUPS else 0, s))
    return [M.ALL] + scen


def _oracle(evaluations, slice_name, task):
    for r in evaluations.values():
        v = r["metrics"].get(slice_name, {}).get(task, {}).get("oracle_auc")
        if v is not None:
            return v
    return None


def tables(evaluations: Dict, base: Optional[str] = None) -> Dict[str, List[List[str]]]:
    """{title: rows (first row the header)}; the cells are strings."""
    names = list(evaluations)
    roles = next(iter(evaluations.values()))["roles"] if evaluations else {}
    out = {}
    for task in TASKS:
        rows = [["scenario", "role", "oracle"] + names]
        for s in _slices(evaluations):
            cells = [_fmt_ci(evaluations[n]["metrics"].get(s, {}).get(task, {}), "auc") for n in names]
            rows.append([s, roles.get(s, ""), _fmt(_oracle(evaluations, s, task))] + cells)
        for group in M.GROUPS:  # SAMD Table 1: mean AUC of the group's scenarios
            cells = [_fmt(evaluations[n]["groups"]["auc"].get(group, {}).get(task)) for n in names]
            if any(c != "n/a" for c in cells):
                rows.append([f"mean {group}", group, ""] + cells)
        if base in evaluations:
            base_auc = evaluations[base]["metrics"][M.ALL].get(task, {}).get("auc")
            rows.append([f"RelaImpr vs {base} (%)", "", ""] + [
                _fmt(M.rela_impr(evaluations[n]["metrics"][M.ALL].get(task, {}).get("auc"), base_auc), 1)
                for n in names])
        out[f"{task} AUC"] = rows
    rows = [["model", "task", "AUC", "GAUC", "LogLoss", "calibration", "rows"]]
    for n in names:
        for task in evaluations[n]["tasks"]:
            m = evaluations[n]["metrics"][M.ALL][task]
            rows.append([n, task, _fmt_ci(m, "auc"), _fmt_ci(m, "gauc"), _fmt(m["logloss"]), _fmt(m["calibration"], 2),
                         str(m["rows"])])
    out["ALL: AUC, GAUC, LogLoss, calibration"] = rows
    if any(evaluations[n].get("budget") for n in names):
        rows = [["model", "examples seen", "epochs (best)", "batch", "parameters", "exported MB", "optimizer"]]
        for n in names:
            b = evaluations[n].get("budget") or {}
            seen, params, size = b.get("examples_seen"), b.get("parameters"), b.get("exported_bytes")
            rows.append([n, f"{seen:,}" if seen is not None else "n/a",
                         f"{b.get('epochs')} ({b.get('best_epoch')})" if b.get("epochs") is not None else "n/a",
                         str(b.get("batch_size") or "n/a"), f"{params:,}" if params is not None else "n/a",
                         _fmt(size / 2**20 if size is not None else None, 1), str(b.get("optimizer") or "n/a")])
        out["budget (training examples until early stopping, on the train split)"] = rows
    rows = [["served model", "blessed", "why"]]
    for n in names:
        for served, b in evaluations[n]["blessings"].items():
            rows.append([served, "yes" if b["blessed"] else "NO", b["reason"]])
    out["blessing (only blessed models are pushed)"] = rows
    return out


def markdown(tabs) -> str:
    parts = ["# keep_samd evaluation report", ""]
    for title, rows in tabs.items():
        parts += [f"## {title}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        parts += ["| " + " | ".join(r) + " |" for r in rows[1:]] + [""]
        if _legend(rows):
            parts += [_legend(rows), ""]
    return "\n".join(parts)


def terminal(tabs) -> str:
    parts = []
    for title, rows in tabs.items():
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        parts.append(f"== {title}")
        parts += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in rows]
        if _legend(rows):
            parts.append(_legend(rows))
        parts.append("")
    return "\n".join(parts)


def html_page(tabs, images: List[str]) -> str:
    parts = ["<!doctype html><meta charset=utf-8><title>keep_samd evaluation</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>",
             "<h1>keep_samd evaluation report</h1>"]
    for title, rows in tabs.items():
        parts.append(f"<h2>{html.escape(title)}</h2><table>")
        parts.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:]]
        parts.append("</table>")
        if _legend(rows):
            parts.append(f"<p>{html.escape(_legend(rows))}</p>")
    parts += [f'<h2>{html.escape(i)}</h2><img src="{html.escape(i)}">' for i in images]
    return "\n".join(parts)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_auc(evaluations, task, path):
    plt = _plt()
    slices = _slices(evaluations)
    names = list(evaluations)
    width = 0.8 / (len(names) + 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(slices)), 4))
    x = np.arange(len(slices))
    oracle = [_oracle(evaluations, s, task) or np.nan for s in slices]
    ax.bar(x, oracle, width, label="oracle", color="#dddddd", hatch="//", edgecolor="#999999", lw=0)
    # tab10 then tab20's light shades, without grey: grey is the oracle's
    palette = [c for i, c in enumerate(plt.cm.tab10.colors) if i != 7]
    palette += [c for i, c in enumerate(plt.cm.tab20.colors) if i % 2 and i != 15]
    for k, n in enumerate(names):
        vals = [evaluations[n]["metrics"].get(s, {}).get(task, {}).get("auc") for s in slices]
        ax.bar(x + (k + 1) * width, [np.nan if v is None else v for v in vals], width, label=n,
               color=palette[k % len(palette)])
    ax.set_xticks(x + 0.4 - width / 2, slices, rotation=30, ha="right")
    ax.set_ylim(0.45, 1.0)
    ax.axhline(0.5, color="k", lw=0.5)
    ax.set_ylabel(f"{task} AUC")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    _save(fig, path, dpi=90)


def plot_learning_curves(evaluations, path) -> bool:
    """Loss and click AUC per epoch, train (dashed) and validation, of every model that recorded them."""
    curves = {n: (e.get("budget") or {}).get("history") for n, e in evaluations.items()}
    curves = {n: h for n, h in curves.items() if h and h.get("val_auc_click")}
    if not curves:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k, (name, h) in enumerate(curves.items()):
        color = plt.cm.tab10.colors[k % 10]
        best = (evaluations[name]["budget"].get("best_epoch") or 0) - 1
        for ax, metric in zip(axes, ("loss", "auc_click")):
            epochs = np.arange(1, len(h[f"val_{metric}"]) + 1)
            ax.plot(epochs, h[f"val_{metric}"], color=color, label=name, marker=".")
            if h.get(metric):
                ax.plot(epochs, h[metric], color=color, ls="--", lw=0.8)
            if 0 <= best < len(epochs):
                ax.plot(epochs[best], h[f"val_{metric}"][best], color=color, marker="o", ms=8, mfc="none")
    for ax, title in zip(axes, ("loss", "click AUC")):
        ax.set_xlabel("epoch (one pass over the train days)")
        ax.set_title(f"{title}: validation (solid), train (dashed); circle: restored epoch", fontsize=9)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path, dpi=80)
    return True


def plot_transfer_weights(transfer, path):
    plt = _plt()
    scen = list(transfer["scenarios"])
    cols = 4
    rows = (len(scen) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.6 * rows), squeeze=False)
    near = transfer.get("neighbours", {})
    for ax, sid in zip(axes.flat, scen):
        record = transfer["scenarios"][sid]
        w = np.asarray(record["transfer_weights"])
        im = ax.imshow(w, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        title = sid
        if record.get("transfer_entropy") is not None:  # how graded: 0 one-hot, 1 uniform rows
            title += f"  H/log M_i={record['transfer_entropy'] / record['max_entropy']:.2f}"
        if near.get(sid):
            title += "\ntop-G: " + ", ".join(near[sid])
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("student layer", fontsize=7)
        ax.set_ylabel("teacher layer", fontsize=7)
    for ax in list(axes.flat)[len(scen):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle("SAMD transfer strategies W_T^i (rows sum to 1)")
    _save(fig, path, dpi=80)


def _pca2(x):
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T if vt.shape[0] >= 2 else np.c_[x @ vt[:1].T, np.zeros(len(x))]


def plot_representations(transfer, roles, path):
    plt = _plt()
    scen = [s for s in transfer["scenarios"] if transfer["scenarios"][s].get("scenario_representation") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "scenario_representation", "T_i"), (axes[1], "cluster_representation", "C_i")):
        have = [s for s in scen if transfer["scenarios"][s].get(key) is not None]
        if len(have) < 2:
            ax.set_title(f"{title}: not available")
            continue
        xy = _pca2([np.ravel(transfer["scenarios"][s][key]) for s in have])
        for (px, py), s in zip(xy, have):
            group = roles.get(s, "")
            ax.scatter(px, py, marker={"super": "*", "homogeneous": "o", "heterogeneous": "s"}.get(group, "^"))
            ax.annotate(s, (px, py), fontsize=7)
        ax.set_title(f"SAMD {title} (PCA to 2-D)")
    fig.tight_layout()
    _save(fig, path, dpi=80)


def plot_clusters(name, counts, path):
    plt = _plt()
    scen = list(counts)
    share = np.asarray([counts[s] for s in scen], np.float64)
    share = share / np.maximum(share.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(4.5, 2.5 + 0.6 * share.shape[1]), 0.8 + 0.4 * len(scen)))
    im = ax.imshow(share, vmin=0, vmax=1, cmap="magma", aspect="auto")
    ax.set_yticks(range(len(scen)), scen, fontsize=8)
    ax.set_xlabel("cluster")
    ax.set_title(f"{name}: share of each scenario\nrouted to each cluster", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    _save(fig, path, dpi=80)


def _save(fig, path: str, dpi: int) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    artifact_io.write_bytes(path, buffer.getvalue())


def write_report(evaluations: Dict, out_dir: str, transfer: Optional[Dict] = None,
                 base: Optional[str] = "shared_bottom") -> Dict[str, str]:
    """Writes every file; returns {kind: path}."""
    base = base if base in evaluations else None
    tabs = tables(evaluations, base)
    images = []
    if evaluations:
        for task in TASKS:
            plot_auc(evaluations, task, os.path.join(out_dir, f"auc_{task}.png"))
            images.append(f"auc_{task}.png")
    if plot_learning_curves(evaluations, os.path.join(out_dir, "learning_curves.png")):
        images.append("learning_curves.png")
    for name, record in evaluations.items():
        if record.get("cluster_by_scenario"):
            plot_clusters(name, record["cluster_by_scenario"], os.path.join(out_dir, f"{name}_clusters.png"))
            images.append(f"{name}_clusters.png")
    if transfer and all(r.get("transfer_weights") is not None for r in transfer["scenarios"].values()):
        plot_transfer_weights(transfer, os.path.join(out_dir, "samd_transfer_weights.png"))
        images.append("samd_transfer_weights.png")
    if transfer:
        roles = next(iter(evaluations.values()))["roles"] if evaluations else {}
        plot_representations(transfer, roles, os.path.join(out_dir, "samd_representations.png"))
        images.append("samd_representations.png")
    files = {"markdown": os.path.join(out_dir, "report.md"), "html": os.path.join(out_dir, "report.html"),
             "text": os.path.join(out_dir, "report.txt"), "metrics": os.path.join(out_dir, "metrics.json")}
    artifact_io.write_text(files["markdown"], markdown(tabs))
    artifact_io.write_text(files["html"], html_page(tabs, images))
    artifact_io.write_text(files["text"], terminal(tabs))
    relaimp = {}
    if base:
        for n, r in evaluations.items():
            relaimp[n] = {t: M.rela_impr(r["metrics"][M.ALL].get(t, {}).get("auc"),
                                         evaluations[base]["metrics"][M.ALL].get(t, {}).get("auc")) for t in TASKS}
    artifact_io.write_json(files["metrics"], {"models": evaluations, "relaimpr_base": base, "relaimpr": relaimp})
    files.update({i: os.path.join(out_dir, i) for i in images})
    return files
