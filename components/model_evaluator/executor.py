"""Executor of ModelEvaluator: score the raw test split through the SavedModel(s), bless or not.

The test split is ExampleGen's last day(s) (components/time_split_example_gen): no
row of it was trained on or used for early stopping or any other choice.

The trained model is either one SavedModel (KEEP, unified models, baselines) or,
for SAMD, one SavedModel per scenario in sub-folders: each student is scored on
its own scenario's rows only, and blessed on its own. Blessing of students:
ModelBlessing's `blessed` is 1 when at least one student is blessed, and
blessing.json lists which, for SamdPusher.

The floor (blessing.py): the floor model's evaluator runs first and its
predictions.npz is this evaluator's `floor_evaluation`; each served model is
compared with the floor's predictions on the same rows, which must be the same test
split in the same order (checked).
"""

import io
import json
import os
from typing import Dict, Optional

import numpy as np
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import BLESSING_KEY, EVALUATION_KEY, EXAMPLES_KEY, MODEL_KEY
from tfx.utils import path_utils

from components.keys import (BASELINE_EVALUATION_KEY, BLESSING_CONFIG_KEY, FLOOR_EVALUATION_KEY, FLOOR_KEY,
                             KNOWLEDGE_KEY, MODEL_NAME_KEY, SCENARIOS_KEY, SCENARIO_TABLE_KEY, SERVING_DIR_KEY)
from models import artifact_io
from components.model_evaluator import metrics as M
from components.model_evaluator.blessing import BlessingConfig, Floor, decide
from schemas.scenarios import read_scenario_table, roles as scenario_roles

EVALUATION_FILE = "evaluation.json"
# Per test row: user, scenario, labels, and per task the prediction and whether the model scored it.
PREDICTIONS_FILE = "predictions.npz"
TEST_SPLIT = "test"
BLESSING_FILE = "blessing.json"


def latest_version(base_path: str) -> Optional[str]:
    """The newest complete version folder under a TF Serving base path (saved_model.pb is written last)."""
    versions = [v for v in artifact_io.folders_with(base_path, "saved_model.pb") if v.isdigit()]
    return os.path.join(base_path, max(versions, key=int)) if versions else None


def _signature(path):
    import tensorflow as tf

    return tf.saved_model.load(path).signatures["serving_default"]


def _tasks(signature):
    return [t for t in M.TASKS if t in signature.structured_outputs]


def _knowledge_input(signature, table, knowledge_dir):
    """For a KEEP-plugged model: extra(first, last, mask) -> its `knowledge` input for those rows, looked
    up in the cache by raw ids as a client would; None for any other model."""
    if "knowledge" not in signature.structured_input_signature[1]:
        return None
    if not knowledge_dir:
        raise ValueError("the model takes a `knowledge` input but the evaluator was given no knowledge cache")
    from models.keep_cache import knowledge_lookup

    lookup = knowledge_lookup(knowledge_dir)  # loaded once, called per batch

    def extra(first, last, mask):
        return {"knowledge": lookup(*(table[c][first:last][mask] for c in ("user", "item", "category")))}

    return extra


def _score(source, scored, table, knowledge_dir, n):
    """One pass over the rows: {served name: ({task: predictions over all rows}, tasks)} for
    `scored` = {served name: (SavedModel dir, mask)}; each model scores its mask's rows only."""
    outputs, scorers = {}, []
    for name, (path, mask) in scored.items():
        sig = _signature(path)
        tasks = _tasks(sig)
        outputs[name] = ({t: np.zeros(n) for t in tasks}, tasks)
        scorers.append((sig, outputs[name][0], mask, _knowledge_input(sig, table, knowledge_dir)))
    M.score_masked(source, scorers)
    return outputs


def _previous_values(config, serving_dir, students, source, table, knowledge_dir) -> Dict[str, Optional[float]]:
    """{served name: its pushed version's metric on the same rows} (a plugged one with this run's cache)."""
    previous = {}
    for name, (_, _, mask) in students.items():
        path = latest_version(os.path.join(serving_dir, name)) if serving_dir else None
        if path:
            previous[name] = (path, mask)
    values = {name: None for name in students}
    try:
        scored = _score(source, previous, table, knowledge_dir, len(source))
    except Exception as e:  # one bad version must not cost the others their comparison: each alone
        logging.warning("could not score the pushed versions in one pass (%s); scoring each alone", e)
        scored = {}
        for name, entry in previous.items():
            try:
                scored.update(_score(source, {name: entry}, table, knowledge_dir, len(source)))
            except Exception as e:  # an unreadable old version must not block a good new one; say so
                logging.warning("could not score %s's pushed version %s: %s", name, entry[0], e)
    for name, (pred, tasks) in scored.items():
        mask, slice_name = previous[name][1], students[name][1]
        full = {t: pred.get(t, np.zeros(len(mask))) for t in M.TASKS}
        values[name] = config.value(M.evaluate(table, full, tasks, covered=mask), slice_name)
    return values


def read_floor(evaluation_uri: str) -> Dict:
    """The floor's name and per-row test predictions, as its evaluator wrote them."""
    path = os.path.join(evaluation_uri, PREDICTIONS_FILE)
    record = artifact_io.read_json(os.path.join(evaluation_uri, EVALUATION_FILE))
    return {"model_name": record["model_name"], "path": path,
            "predictions": dict(np.load(io.BytesIO(artifact_io.read_bytes(path))))}


def check_aligned(floor: Dict, table, split: str) -> None:
    """Raises unless the floor's predictions are of `table`'s rows in the same order: a paired
    comparison of misaligned rows would be silently wrong."""
    saved, n = floor["predictions"], len(table["scenario"])
    problem = None
    if len(saved["scenario"]) != n:
        problem = f"{len(saved['scenario'])} rows against {n}"
    else:
        for column, key in (("user", "user"), ("scenario", "scenario"), *((t, f"{t}_label") for t in M.TASKS)):
            differ = np.flatnonzero(np.asarray(saved[key]).astype(str) != np.asarray(table[column]).astype(str))
            if len(differ):
                problem = f"{column} differs at {len(differ)} rows (first: row {differ[0]})"
                break
    if problem:
        raise ValueError(f"the floor's predictions {floor['path']} and the test split {split} do not align: "
                         f"{problem}; both evaluators must read the same test split in the same order")


def against_floor(config: BlessingConfig, table, pred, rows, floor: Dict) -> Floor:
    """The model's metric against the floor's on `rows` (the model's, as its metric is scored), paired."""
    metric, task = config.split_metric()
    chosen = M.task_rows(table, rows, task)
    saved = floor["predictions"]
    if task not in saved or not saved[f"{task}_covered"][chosen].all():
        raise ValueError(f"the floor {floor['model_name']} ({floor['path']}) did not score {task} on every row "
                         "it is compared on")
    y, ours, theirs = table[task][chosen], M.clipped(pred[task][chosen]), M.clipped(saved[task][chosen])
    if metric == "auc":
        return Floor(floor["model_name"], M.auc(y, theirs), int(chosen.sum()), M.paired_auc_difference(y, ours, theirs))
    users = table["user"][chosen]
    return Floor(floor["model_name"], M.gauc(users, y, theirs), int(chosen.sum()),
                 M.paired_gauc_difference(users, y, ours, theirs))


def cluster_by_scenario(model_dir, rows, table) -> Dict[str, list]:
    """{scenario: examples routed to each cluster} from a `routing` signature (ADL), else {}."""
    import tensorflow as tf

    signatures = tf.saved_model.load(model_dir).signatures
    if "routing" not in signatures:
        return {}
    source = M.ExampleSource.of(rows)
    n = len(source)
    out = {"cluster": np.zeros(n)}
    M.score_masked(source, [(signatures["routing"], out, np.ones(n, bool), None)])
    cluster = out["cluster"].astype(np.int64)
    k = int(cluster.max()) + 1 if len(cluster) else 0
    return {s: np.bincount(cluster[table["scenario"] == s], minlength=k).tolist()
            for s in sorted(set(table["scenario"].tolist()))}


def evaluate_model(model_dir: str, rows, table, roles: Dict[str, str], model_name: str, serving_dir: str,
                   config: BlessingConfig, baseline: Optional[Dict] = None, knowledge_dir: Optional[str] = None,
                   scenarios: Optional[list] = None, predictions: Optional[Dict] = None,
                   floor_name: Optional[str] = None, floor: Optional[Dict] = None) -> Dict:
    """The evaluation record: metrics, group means and one blessing per served model.

    `rows`: the split's serialized examples, an `metrics.ExampleSource` (streamed) or an array;
    `scenarios`: score only these scenarios' rows (a model of some scenarios only);
    `knowledge_dir`: the knowledge cache a KEEP-plugged model's input is looked up in;
    `predictions`: a dict that receives {task: predictions, f"{task}_covered": mask} per row;
    `floor`: the floor's `read_floor`, aligned with `table`, each served model is compared with;
    `floor_name`: the floor model, when no `floor` is given: this model itself (then blessed
    whenever its metric can be computed) or one not trained in this run (not compared).
    """
    source = M.ExampleSource.of(rows)
    n = len(source)
    pred = {t: np.zeros(n) for t in M.TASKS}
    tasks = set()
    students = {}  # served model name -> (SavedModel dir, scenario or ALL, rows it scores)
    if fileio.exists(os.path.join(model_dir, "saved_model.pb")):
        scope = np.isin(table["scenario"], list(scenarios)) if scenarios else np.ones(n, bool)
        students[model_name] = (model_dir, M.ALL, scope)
    else:
        for sub in artifact_io.folders_with(model_dir, "saved_model.pb"):
            students[f"{model_name}_{sub}"] = (os.path.join(model_dir, sub), sub, table["scenario"] == sub)
        if not students:
            raise FileNotFoundError(f"{model_dir}: no SavedModel to evaluate")
    covered = {t: np.zeros(n, bool) for t in M.TASKS}  # per task: a student may predict click only
    scored = _score(source, {name: (path, mask) for name, (path, _, mask) in students.items()}, table,
                    knowledge_dir, n)
    for name, (out, student_tasks) in scored.items():
        mask = students[name][2]
        tasks.update(student_tasks)
        for t in student_tasks:
            pred[t][mask] = out[t][mask]
            covered[t] |= mask
    ordered = [t for t in M.TASKS if t in tasks]
    if predictions is not None:
        for t in ordered:
            predictions[t], predictions[f"{t}_covered"] = pred[t].astype(np.float32), covered[t]
    per_slice = M.evaluate(table, pred, ordered, covered=covered)
    previous = _previous_values(config, serving_dir, students, source, table, knowledge_dir)
    floor_name = floor["model_name"] if floor else floor_name
    fallback = model_name == floor_name
    if floor_name and not floor and not fallback and config.floor:
        logging.info("the floor %s is not trained in this run: %s is not compared with it", floor_name, model_name)
    blessings = {}
    for name, (_, slice_name, mask) in students.items():
        base = config.value(baseline["metrics"], slice_name) if baseline else None
        value, task = config.value(per_slice, slice_name), config.split_metric()[1]
        against = None  # no floor, this is the floor, or no metric (refused anyway)
        if floor_name and not fallback:
            if not config.floor:
                against = Floor(floor_name, skipped="off for this model")
            elif not floor:
                against = Floor(floor_name, skipped="not trained in this run")
            elif value is not None:
                against = against_floor(config, table, pred, mask & covered[task], floor)
        blessed, reason = decide(config, value, base, previous[name], floor=against, fallback=fallback,
                                 baseline_name=baseline["model_name"] if baseline else "chance")
        blessings[name] = {"blessed": blessed, "reason": reason, "slice": slice_name, "previous": previous[name],
                           "floor": against.as_dict() if against else None, "fallback": fallback}
        logging.info("%s: %s (%s)", name, "BLESSED" if blessed else "NOT BLESSED", reason)
    routing = {}
    if M.ALL in {sl for _, sl, _ in students.values()}:
        routing = cluster_by_scenario(model_dir, source, table)
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
    from trainers.records import TRAINING_FILE

    path = os.path.join(model_uri, TRAINING_FILE)
    return artifact_io.read_json(path) if fileio.exists(path) else {}


class Executor(base_executor.BaseExecutor):
    @staticmethod
    def _scenarios(exec_properties, training):
        """The `scenarios` parameter, else those the trainer recorded (training.json), else None: all."""
        if exec_properties.get(SCENARIOS_KEY):
            return json.loads(exec_properties[SCENARIOS_KEY])
        return training.get("scenarios")

    def Do(self, input_dict, output_dict, exec_properties):
        examples = artifact_utils.get_single_uri(input_dict[EXAMPLES_KEY])
        model_dir = path_utils.serving_model_path(artifact_utils.get_single_uri(input_dict[MODEL_KEY]))
        baseline = None
        if input_dict.get(BASELINE_EVALUATION_KEY):
            baseline = artifact_io.read_json(os.path.join(
                artifact_utils.get_single_uri(input_dict[BASELINE_EVALUATION_KEY]), EVALUATION_FILE))
        config = BlessingConfig.from_dict(json.loads(exec_properties.get(BLESSING_CONFIG_KEY) or "{}"))
        roles = scenario_roles(read_scenario_table(artifact_utils.get_single_uri(input_dict[SCENARIO_TABLE_KEY])))
        rows, table = M.read_split(M.eval_files(examples, TEST_SPLIT))  # streamed: never the whole split in memory
        logging.info("evaluating %s on %d test rows", exec_properties[MODEL_NAME_KEY], len(rows))
        knowledge_dir = None
        if input_dict.get(KNOWLEDGE_KEY):
            knowledge_dir = path_utils.serving_model_path(artifact_utils.get_single_uri(input_dict[KNOWLEDGE_KEY]))
        training = training_record(artifact_utils.get_single_uri(input_dict[MODEL_KEY]))
        floor = None
        if input_dict.get(FLOOR_EVALUATION_KEY):
            floor = read_floor(artifact_utils.get_single_uri(input_dict[FLOOR_EVALUATION_KEY]))
            check_aligned(floor, table, os.path.join(examples, f"Split-{TEST_SPLIT}"))
        predictions = {}
        record = evaluate_model(model_dir, rows, table, roles, exec_properties[MODEL_NAME_KEY],
                                exec_properties[SERVING_DIR_KEY], config, baseline, knowledge_dir=knowledge_dir,
                                scenarios=self._scenarios(exec_properties, training), predictions=predictions,
                                floor_name=exec_properties.get(FLOOR_KEY) or None, floor=floor)
        # The budget it was trained with, for equal-budget comparisons in the report.
        keys = ("examples_seen", "epochs", "best_epoch", "batch_size", "parameters", "optimizer", "history")
        record["budget"] = {**{k: training.get(k) for k in keys}, "exported_bytes": exported_bytes(model_dir)}

        evaluation = artifact_utils.get_single_instance(output_dict[EVALUATION_KEY])
        artifact_io.write_json(os.path.join(evaluation.uri, EVALUATION_FILE), record)
        # Paired comparisons (the floor's, bench/quality.py) need each model's predictions on the same rows.
        buffer = io.BytesIO()
        np.savez_compressed(buffer, user=table["user"].astype(str), scenario=table["scenario"].astype(str),
                            **{f"{t}_label": table[t] for t in M.TASKS}, **predictions)
        artifact_io.write_bytes(os.path.join(evaluation.uri, PREDICTIONS_FILE), buffer.getvalue())
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        blessed = any(b["blessed"] for b in record["blessings"].values())
        artifact_io.write_json(os.path.join(blessing.uri, BLESSING_FILE), record["blessings"])
        # TFX's Evaluator writes these marker files; the Pusher reads the `blessed` property.
        artifact_io.touch(os.path.join(blessing.uri, "BLESSED" if blessed else "NOT_BLESSED"))
        blessing.set_int_custom_property("blessed", int(blessed))
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        blessing.set_string_custom_property("current_model", model.uri)
        # What TFX's LatestBlessedModelStrategy matches a blessing to its model by.
        blessing.set_int_custom_property("current_model_id", model.id)
