"""Executor of ModelEvaluator: score the raw test split through the SavedModel(s), bless or not.

The test split is ExampleGen's last day(s) (components/time_split_example_gen): no
row of it was trained on or used for early stopping or any other choice.

The trained model is either one SavedModel (KEEP, unified models, baselines) or,
for SAMD, one SavedModel per scenario in sub-folders: each student is scored on
its own scenario's rows only, and blessed on its own. Blessing of students:
ModelBlessing's `blessed` is 1 when at least one student is blessed, and
blessing.json lists which, for SamdPusher.
"""

import glob
import json
import os
from typing import Dict, Optional

import numpy as np
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.model_evaluator import metrics as M
from components.model_evaluator.blessing import BlessingConfig, decide

EVALUATION_FILE = "evaluation.json"
# Per test row: user, scenario, labels, and per task the prediction and whether the model scored it.
PREDICTIONS_FILE = "predictions.npz"
TEST_SPLIT = "test"
BLESSING_FILE = "blessing.json"


def latest_version(base_path: str) -> Optional[str]:
    """The newest complete version folder under a TF Serving base path (saved_model.pb is written last)."""
    versions = [d for d in glob.glob(os.path.join(base_path, "*")) if os.path.basename(d).isdigit()
                and os.path.isfile(os.path.join(d, "saved_model.pb"))]
    return max(versions, key=lambda d: int(os.path.basename(d))) if versions else None


def _signature(path):
    import tensorflow as tf

    return tf.saved_model.load(path).signatures["serving_default"]


def _tasks(signature):
    return [t for t in M.TASKS if t in signature.structured_outputs]


def _extra_inputs(signature, table, mask, knowledge_dir) -> Optional[Dict]:
    """A KEEP-plugged model's `knowledge` input, looked up in the cache by raw ids as a client would."""
    if "knowledge" not in signature.structured_input_signature[1]:
        return None
    if not knowledge_dir:
        raise ValueError("the model takes a `knowledge` input but the evaluator was given no knowledge cache")
    from models.keep_cache import lookup_knowledge

    return {"knowledge": lookup_knowledge(knowledge_dir, table["user"][mask], table["item"][mask],
                                          table["category"][mask])}


def _previous_value(config, serving_path, rows, table, mask, slice_name, knowledge_dir=None) -> Optional[float]:
    """The pushed version's metric on the same rows (a plugged one with this run's cache)."""
    previous = latest_version(serving_path) if serving_path else None
    if not previous:
        return None
    try:
        sig = _signature(previous)
        pred = {t: np.zeros(len(rows)) for t in M.TASKS}
        tasks = _tasks(sig)
        for t, v in M.score(sig, rows[mask], tasks, extra=_extra_inputs(sig, table, mask, knowledge_dir)).items():
            pred[t][mask] = v
        return config.value(M.evaluate(table, pred, tasks, covered=mask), slice_name)
    except Exception as e:  # an unreadable old version must not block a good new one; say so
        logging.warning("could not score the pushed version %s: %s", previous, e)
        return None


def cluster_by_scenario(model_dir, rows, table) -> Dict[str, list]:
    """{scenario: examples routed to each cluster} from a `routing` signature (ADL), else {}."""
    import tensorflow as tf

    signatures = tf.saved_model.load(model_dir).signatures
    if "routing" not in signatures:
        return {}
    cluster = M.score(signatures["routing"], rows, ("cluster",))["cluster"].astype(np.int64)
    k = int(cluster.max()) + 1 if len(cluster) else 0
    return {s: np.bincount(cluster[table["scenario"] == s], minlength=k).tolist()
            for s in sorted(set(table["scenario"].tolist()))}


def evaluate_model(model_dir: str, rows, table, roles: Dict[str, str], model_name: str, serving_dir: str,
                   config: BlessingConfig, baseline: Optional[Dict] = None, knowledge_dir: Optional[str] = None,
                   scenarios: Optional[list] = None, predictions: Optional[Dict] = None) -> Dict:
    """The evaluation record: metrics, group means and one blessing per served model.

    `scenarios`: score only these scenarios' rows (a model of some scenarios only);
    `knowledge_dir`: the knowledge cache a KEEP-plugged model's input is looked up in;
    `predictions`: a dict that receives {task: predictions, f"{task}_covered": mask} per row.
    """
    n = len(rows)
    pred = {t: np.zeros(n) for t in M.TASKS}
    tasks = set()
    students = {}  # served model name -> (scenario or ALL, rows it scores)
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        scope = np.isin(table["scenario"], list(scenarios)) if scenarios else np.ones(n, bool)
        students[model_name] = (model_dir, M.ALL, scope)
    else:
        for sub in sorted(os.listdir(model_dir)):
            if os.path.isfile(os.path.join(model_dir, sub, "saved_model.pb")):
                students[f"{model_name}_{sub}"] = (os.path.join(model_dir, sub), sub, table["scenario"] == sub)
        if not students:
            raise FileNotFoundError(f"{model_dir}: no SavedModel to evaluate")
    covered = {t: np.zeros(n, bool) for t in M.TASKS}  # per task: a student may predict click only
    for name, (path, _, mask) in students.items():
        sig = _signature(path)
        tasks.update(_tasks(sig))
        for t, v in M.score(sig, rows[mask], _tasks(sig), extra=_extra_inputs(sig, table, mask, knowledge_dir)).items():
            pred[t][mask] = v
            covered[t] |= mask
    ordered = [t for t in M.TASKS if t in tasks]
    if predictions is not None:
        for t in ordered:
            predictions[t], predictions[f"{t}_covered"] = pred[t].astype(np.float32), covered[t]
    per_slice = M.evaluate(table, pred, ordered, covered=covered)
    blessings = {}
    for name, (_, slice_name, mask) in students.items():
        base = config.value(baseline["metrics"], slice_name) if baseline else None
        previous = _previous_value(config, os.path.join(serving_dir, name), rows, table, mask, slice_name,
                                   knowledge_dir)
        blessed, reason = decide(config, config.value(per_slice, slice_name), base, previous,
                                 baseline_name=baseline["model_name"] if baseline else "chance")
        blessings[name] = {"blessed": blessed, "reason": reason, "slice": slice_name, "previous": previous}
        logging.info("%s: %s (%s)", name, "BLESSED" if blessed else "NOT BLESSED", reason)
    routing = {}
    if M.ALL in {sl for _, sl, _ in students.values()}:
        routing = cluster_by_scenario(model_dir, rows, table)
    return {"model_name": model_name, "tasks": ordered, "cluster_by_scenario": routing, "test_rows": n, "metrics": per_slice,
            "groups": {m: M.group_means(per_slice, roles, m) for m in ("auc", "gauc")}, "roles": roles,
            "blessing_config": config.__dict__, "baseline": baseline["model_name"] if baseline else "chance",
            "blessings": blessings}


def exported_bytes(model_dir: str) -> int:
    """Bytes of a SavedModel folder (or of a folder of them), as pushed."""
    total = 0
    for root, _, files in fileio.walk(model_dir):
        total += sum(fileio.stat(os.path.join(root, f)).length for f in files)
    return int(total)


def training_record(model_uri: str) -> Dict:
    """What the trainer recorded next to the SavedModel (training.json: budget, scenarios), or {}."""
    from models.multitask import TRAINING_FILE

    path = os.path.join(model_uri, TRAINING_FILE)
    if not fileio.exists(path):
        return {}
    with fileio.open(path) as f:
        return json.loads(f.read())


class Executor(base_executor.BaseExecutor):
    @staticmethod
    def _scenarios(exec_properties, training):
        """The `scenarios` parameter, else those the trainer recorded (training.json), else None: all."""
        if exec_properties.get("scenarios"):
            return json.loads(exec_properties["scenarios"])
        return training.get("scenarios")

    def Do(self, input_dict, output_dict, exec_properties):
        from components.raw_data_check.checks import read_scenarios

        examples = artifact_utils.get_single_uri(input_dict["examples"])
        model_dir = path_utils.serving_model_path(artifact_utils.get_single_uri(input_dict["model"]))
        baseline = None
        if input_dict.get("baseline_evaluation"):
            with open(os.path.join(artifact_utils.get_single_uri(input_dict["baseline_evaluation"]),
                                   EVALUATION_FILE)) as f:
                baseline = json.load(f)
        config = BlessingConfig.from_dict(json.loads(exec_properties.get("blessing_config") or "{}"))
        roles = {sid: row["role"] for sid, row in
                 read_scenarios(os.path.join(exec_properties["data_root"], "scenarios.csv")).items()}
        rows, table = M.load_examples(M.eval_files(examples, TEST_SPLIT))
        logging.info("evaluating %s on %d test rows", exec_properties["model_name"], len(rows))
        knowledge_dir = None
        if input_dict.get("knowledge"):
            knowledge_dir = path_utils.serving_model_path(artifact_utils.get_single_uri(input_dict["knowledge"]))
        training = training_record(artifact_utils.get_single_uri(input_dict["model"]))
        predictions = {}
        record = evaluate_model(model_dir, rows, table, roles, exec_properties["model_name"],
                                exec_properties["serving_dir"], config, baseline, knowledge_dir=knowledge_dir,
                                scenarios=self._scenarios(exec_properties, training), predictions=predictions)
        # The budget it was trained with, for equal-budget comparisons in the report.
        keys = ("examples_seen", "epochs", "best_epoch", "batch_size", "parameters", "optimizer")
        record["budget"] = {**{k: training.get(k) for k in keys}, "exported_bytes": exported_bytes(model_dir)}

        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        os.makedirs(evaluation.uri, exist_ok=True)
        with open(os.path.join(evaluation.uri, EVALUATION_FILE), "w") as f:
            json.dump(record, f, indent=1)
        # Paired comparisons (bench/quality.py) need each model's predictions on the same rows.
        import io

        buffer = io.BytesIO()
        np.savez_compressed(buffer, user=table["user"].astype(str), scenario=table["scenario"].astype(str),
                            **{f"{t}_label": table[t] for t in M.TASKS}, **predictions)
        with fileio.open(os.path.join(evaluation.uri, PREDICTIONS_FILE), "wb") as f:
            f.write(buffer.getvalue())
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        os.makedirs(blessing.uri, exist_ok=True)
        blessed = any(b["blessed"] for b in record["blessings"].values())
        with open(os.path.join(blessing.uri, BLESSING_FILE), "w") as f:
            json.dump(record["blessings"], f, indent=1)
        # TFX's Evaluator writes these marker files; the Pusher reads the `blessed` property.
        open(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"), "w").close()
        blessing.set_int_custom_property("blessed", int(blessed))
        model = artifact_utils.get_single_instance(input_dict["model"])
        blessing.set_string_custom_property("current_model", model.uri)
        # What TFX's LatestBlessedModelStrategy matches a blessing to its model by.
        blessing.set_int_custom_property("current_model_id", model.id)
