"""Distributed training of KEEP: the strategy TF_CONFIG picks, and two short runs on 127.0.0.1.

The slow tests run `trainers.generic.run_fn` in child processes (this file run as
`python -m tests.trainers.test_distribute ...`, see `_main`), so the pytest process never
joins a cluster: two MultiWorkerMirroredStrategy workers, and a ParameterServerStrategy
coordinator with two workers and two parameter servers in its own process (TF's
create_in_process_cluster). The data are tiny stand-ins for the Transform output (the
raw features already are the transformed ones), so no Transform run is needed. Each
run's export must predict as a single-process export of the weights it saved does.
"""

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from models import registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Vocabulary file sizes of the stand-in transform (embedding tables are 11 rows larger:
# absent + OOV buckets). user_id is the one table big enough to shard (MIN_SHARD_BYTES).
VOCAB = {"user_id": 500, "item_id": 60, "category_id": 12, "shop_id": 20, "scenario_id": 4, "user_gender": 3,
         "pay_channel": 3, "live_room_id": 5, "device_type": 3}
SMALL = {"user_embedding_dim": 8, "embedding_dim": 4, "tower_units": [16, 8], "attention_units": [8], "batch_size": 32}
MIN_SHARD_BYTES = 4096  # (500 + 11) x 8 floats = 16 KiB: 2 shards; every other variable < 8 KiB stays whole
HISTORY = 20
TRAIN_ROWS, EVAL_ROWS = 128, 128  # a pass over the train rows: 4 steps of 32
DEADLINE_S = 240  # a child that has not finished by then is stuck (e.g. waiting for a peer that died)


# ---- stand-ins for the Transform output and TFX's data accessor -------------------------------------------------


def feature_spec():
    spec = {n: tf.io.FixedLenFeature([], tf.int64, default_value=0) for n in VOCAB}
    spec.update({n: tf.io.FixedLenFeature([], tf.int64, default_value=0) for n in ("user_age_bucket", "hour")})
    spec.update({n: tf.io.FixedLenFeature([HISTORY], tf.int64, default_value=[0] * HISTORY)
                 for n in ("hist_item_ids", "hist_category_ids")})
    spec.update({n: tf.io.FixedLenFeature([], tf.float32, default_value=0.0)
                 for n in ("item_price", "user_scenario_exposures", "item_scenario_exposures", "click", "conversion",
                           "cart")})
    return spec


class _Identity(tf.Module):
    """The stand-in transform graph: raw features are already transformed."""

    def __call__(self, raw):
        return dict(raw)


class FakeTransformOutput:
    """What run_fn and models.export read of a TFTransformOutput."""

    transformed_metadata = SimpleNamespace(schema=None)

    def __init__(self, *_):
        pass

    def vocabulary_size_by_name(self, name):
        return VOCAB[name]

    def raw_feature_spec(self):
        return feature_spec()

    def transform_features_layer(self):
        return _Identity()


class FileDataAccessor:
    """TFX's data_accessor for TFRecords of tf.Examples: shuffled, repeated, batched as tfxio does (its last
    partial batch kept unless `drop_final_batch`)."""

    def tf_dataset_factory(self, file_pattern, options, schema):
        files = sorted(f for p in ([file_pattern] if isinstance(file_pattern, str) else file_pattern)
                       for f in tf.io.gfile.glob(p))
        dataset = tf.data.TFRecordDataset(files)
        if options.shuffle:
            dataset = dataset.shuffle(options.shuffle_buffer_size, seed=7)
        spec = feature_spec()
        batches = dataset.repeat(options.num_epochs).batch(options.batch_size, drop_remainder=options.drop_final_batch)
        return batches.map(lambda x: tf.io.parse_example(x, spec))


def rows(n, seed):
    """`n` rows of features and labels; clicks depend on the item, so training has something to learn."""
    rng = np.random.default_rng(seed)
    item = rng.integers(1, VOCAB["item_id"] + 1, n)
    out = {n_: rng.integers(1, size + 1, n) for n_, size in VOCAB.items()}
    out.update(item_id=item, user_age_bucket=rng.integers(1, 8, n), hour=rng.integers(1, 25, n),
               hist_item_ids=rng.integers(0, VOCAB["item_id"] + 1, (n, HISTORY)),
               hist_category_ids=rng.integers(0, VOCAB["category_id"] + 1, (n, HISTORY)),
               item_price=rng.normal(size=n).astype(np.float32),
               user_scenario_exposures=rng.normal(size=n).astype(np.float32),
               item_scenario_exposures=rng.normal(size=n).astype(np.float32))
    click = (rng.random(n) < np.where(item % 3 == 0, 0.7, 0.2)).astype(np.float32)
    conversion = click * (rng.random(n) < 0.4)
    out.update(click=click, conversion=conversion.astype(np.float32),
               cart=(click * (rng.random(n) < 0.3)).astype(np.float32))
    return out


def serialized(columns):
    examples = []
    for i in range(len(columns["click"])):
        e = tf.train.Example()
        for name, values in columns.items():
            v = np.atleast_1d(values[i])
            if v.dtype.kind == "f":
                e.features.feature[name].float_list.value.extend(v.tolist())
            else:
                e.features.feature[name].int64_list.value.extend(int(x) for x in v)
        examples.append(e.SerializeToString())
    return examples


def write_data(root):
    for split, n, seed in (("train", TRAIN_ROWS, 1), ("eval", EVAL_ROWS, 2)):
        with tf.io.TFRecordWriter(os.path.join(root, f"{split}.tfrecord")) as w:
            for e in serialized(rows(n, seed)):
                w.write(e)


def digest(model):
    """Sum of |values| of each trainable variable, in creation order; a sharded variable's shards count as one.

    By order, not name: Keras numbers layer names per process (dense_3, ...).
    """
    sums, last = [], None
    for v in model.trainable_variables:
        part = re.fullmatch(r"(.+)/part_\d+(:\d+)?", v.name)
        if part and part.group(1) == last:
            sums[-1] += float(np.sum(np.abs(v.numpy())))
            continue
        last = part.group(1) if part else None
        sums.append(float(np.sum(np.abs(v.numpy()))))
    return sums


def assert_same_digest(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5)


KEEP_CONFIG = {"model": dataclasses.asdict(registry.get("keep_general")), "config": SMALL, "epochs": 2, "patience": 2,
               "seed": 5, "model_name": "keep_general", "min_shard_bytes": MIN_SHARD_BYTES}


def fn_args(root, custom_config=None):
    return SimpleNamespace(
        custom_config=custom_config or KEEP_CONFIG,
        transform_output=os.path.join(root, "transform"), data_accessor=FileDataAccessor(),
        train_files=[os.path.join(root, "train.tfrecord")], eval_files=[os.path.join(root, "eval.tfrecord")],
        train_steps=8, eval_steps=2, serving_model_dir=os.path.join(root, "model", "Format-Serving"),
        model_run_dir=os.path.join(root, "model_run"))


# ---- child processes ---------------------------------------------------------------------------------------------


def _train(root, report_name):
    """run_fn on the stand-ins; reports where this process exported and a digest of the weights it exported."""
    import tensorflow_transform as tft

    from models import export
    from trainers import generic

    tft.TFTransformOutput = FakeTransformOutput
    exported = []
    original = export.export_saved_model

    def recording(model, tft_output, export_dir, **kw):
        exported.append({"dir": export_dir, "digest": digest(model)})
        return original(model, tft_output, export_dir, **kw)

    export.export_saved_model = recording
    args = fn_args(root)
    generic.run_fn(args)
    for e in exported:
        e["dir_left"] = os.path.exists(e["dir"])
    # What TFX's Trainer executor checks on every replica once run_fn returns.
    report = {"exports": exported, "serving_dir_after_run_fn": os.path.exists(args.serving_model_dir)}
    with open(os.path.join(root, report_name), "w") as f:
        json.dump(report, f)


def _in_process_cluster(ports):
    """Two workers and two parameter servers on `ports` in this process (TF's create_in_process_cluster)."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports[:2]], "ps": [f"127.0.0.1:{p}" for p in ports[2:]]}
    spec = tf.train.ClusterSpec(cluster)
    config = tf.compat.v1.ConfigProto()
    # As the tutorial does on small machines: fewer inter-op threads than workers + 1 can deadlock them.
    config.inter_op_parallelism_threads = len(cluster["worker"]) + 1
    for job, addresses in cluster.items():
        for i in range(len(addresses)):
            tf.distribute.Server(spec, job_name=job, task_index=i, protocol="grpc", config=config, start=True)
    return cluster


def _describe_cluster(root, ports):
    """A ParameterServerStrategy coordinator that writes `distribute.describe` of a tiny model, and stops."""
    import tf_keras

    from trainers import distribute

    os.environ["TF_CONFIG"] = json.dumps({"cluster": _in_process_cluster(ports)})
    strategy = distribute.strategy_for_cluster()
    with strategy.scope():
        model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(2,))])
    with open(os.path.join(root, "describe.json"), "w") as f:
        json.dump(distribute.describe(strategy, model), f)


def _main(argv):
    role, root = argv[0], argv[1]
    if role == "describe":
        _describe_cluster(root, [int(p) for p in argv[2].split(",")])
    elif role == "ps":
        cluster = _in_process_cluster([int(p) for p in argv[2].split(",")])
        # The coordinator has no task of its own: the strategy is read from TF_CONFIG as on Vertex.
        os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster})
        _train(root, "report_coordinator.json")
    else:  # a MultiWorkerMirroredStrategy worker; TF_CONFIG comes from the parent
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        _train(root, f"report_{task['type']}{task['index']}.json")


# ---- the parent's side -----------------------------------------------------------------------------------------


def free_ports(n):
    """`n` distinct ports the kernel says are free now; another process may take one before the child binds it."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


PORT_TAKEN = ("Address already in use", "Could not start gRPC server", "Failed to add port")


def run_children(envs, args, log_dir, attempts=3):
    """Runs one child per env until all exit, each within DEADLINE_S; retries with new ports when a bind lost the race.

    `envs(ports)` / `args(ports)`: per-child environments and arguments for a port list.
    Returns the wall time of the successful attempt.
    """
    for attempt in range(attempts):
        ports = free_ports(4)
        started, procs, logs = time.time(), [], []
        for i, env in enumerate(envs(ports)):
            log = open(os.path.join(log_dir, f"child{i}_attempt{attempt}.log"), "w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-m", "tests.trainers.test_distribute", *args(ports)[i]],
                                          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = started + DEADLINE_S
        try:
            # Until all succeed, one fails (its peers would wait for it until the deadline) or time is up.
            while time.time() < deadline:
                codes = [p.poll() for p in procs]
                if all(c == 0 for c in codes) or any(c not in (None, 0) for c in codes):
                    break
                time.sleep(0.5)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=30)
        texts = []
        for log in logs:
            log.seek(0)
            texts.append(log.read())
            log.close()
        if all(p.returncode == 0 for p in procs):
            return time.time() - started
        if not any(marker in t for t in texts for marker in PORT_TAKEN):
            tails = "\n".join(f"--- child {i} (exit {p.returncode}) ---\n{t[-4000:]}"
                              for i, (p, t) in enumerate(zip(procs, texts)))
            pytest.fail(f"distributed run failed or passed its {DEADLINE_S}s deadline:\n{tails}")
    pytest.fail(f"a port was taken between picking it and binding it, {attempts} times in a row")


def child_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    return {**env, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO, **extra}


def single_process_export(root, out):
    """The chief's saved weights loaded into a model built without a strategy, exported the same way."""
    from models import export
    from models.keep import KeepModel
    from trainers.generic import keras_model_dir

    keras_dir = keras_model_dir(os.path.join(root, "model", "Format-Serving"))
    with open(os.path.join(keras_dir, "config.json")) as f:
        model = KeepModel.from_config(json.load(f))
    spec = feature_spec()
    model(tf.io.parse_example(tf.constant(serialized(rows(4, 9))), spec))
    model.load_weights(os.path.join(keras_dir, "weights")).assert_existing_objects_matched().expect_partial()
    export.export_saved_model(model, FakeTransformOutput(), out,
                              outputs={"serving_default": ("click", "conversion", "cart"), "knowledge": ("knowledge",)},
                              model_name="keep_general")
    return model


def assert_predicts_like_a_single_process_export(root, tmp_path):
    model = single_process_export(root, str(tmp_path / "single"))
    examples = tf.constant(serialized(rows(64, 3)))
    distributed = tf.saved_model.load(os.path.join(root, "model", "Format-Serving")).signatures
    single = tf.saved_model.load(str(tmp_path / "single")).signatures
    for signature, outputs in (("serving_default", ("click", "conversion", "cart")), ("knowledge", ("knowledge",))):
        got, want = distributed[signature](examples=examples), single[signature](examples=examples)
        for name in outputs:
            np.testing.assert_allclose(got[name].numpy(), want[name].numpy(), rtol=1e-5, atol=1e-6)
    # Not a trivially equal pair: the predictions vary over the examples.
    assert np.std(got["knowledge"].numpy()) > 0 and np.std(single["serving_default"](examples=examples)["click"]) > 0
    return model


def training_record(root):
    with open(os.path.join(root, "model", "training.json")) as f:
        return json.load(f)


# ---- tests -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster, kind", [
    (None, "default"),
    ({"chief": ["h:1"]}, "default"),
    ({"worker": ["h:1"]}, "default"),
    ({"chief": ["h:1"], "worker": ["h:2"]}, "multi_worker_mirrored"),
    ({"worker": ["h:1", "h:2"]}, "multi_worker_mirrored"),
    ({"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3"]}, "parameter_server"),
])
def test_cluster_kind(cluster, kind):
    from trainers import distribute

    assert distribute.cluster_kind(cluster) == kind


def test_the_chief_writes_else_worker_0_of_a_chiefless_cluster():
    from trainers.distribute import is_chief

    assert is_chief(None, None, None)
    assert is_chief("chief", 0, {"chief": ["a"], "worker": ["b"]})
    assert not is_chief("worker", 0, {"chief": ["a"], "worker": ["b"]})
    assert is_chief("worker", 0, {"worker": ["a", "b"]})
    assert not is_chief("worker", 1, {"worker": ["a", "b"]})


def test_without_tf_config_the_trainer_gets_the_default_strategy_and_its_own_folders(monkeypatch):
    from trainers import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.strategy_for_cluster()
    assert strategy is tf.distribute.get_strategy() and distribute.writes_outputs(strategy)
    args = SimpleNamespace(serving_model_dir="/m/Format-Serving", model_run_dir="/m/run")
    with distribute.for_this_worker(strategy, args) as mine:
        assert mine is args


def test_a_non_chief_worker_writes_to_a_scratch_folder_it_removes(monkeypatch):
    from trainers import distribute

    resolver = SimpleNamespace(task_type="worker", task_id=1,
                               cluster_spec=lambda: SimpleNamespace(as_dict=lambda: {"worker": ["a", "b"]}))
    strategy = SimpleNamespace(cluster_resolver=resolver)
    monkeypatch.setattr(distribute, "is_multi_worker", lambda s: s is strategy)
    args = SimpleNamespace(serving_model_dir="/out/model/Format-Serving", model_run_dir="/out/model_run", x=1)
    with distribute.for_this_worker(strategy, args) as mine:
        assert (mine.x, os.path.basename(mine.serving_model_dir)) == (1, "Format-Serving")
        scratch = os.path.dirname(os.path.dirname(mine.serving_model_dir))
        assert os.path.isdir(scratch) and not mine.model_run_dir.startswith("/out")
    assert args.serving_model_dir == "/out/model/Format-Serving" and not os.path.exists(scratch)


def test_wait_for_has_a_deadline(tmp_path):
    from trainers.distribute import wait_for

    assert wait_for(str(tmp_path), timeout_s=0)
    started = time.monotonic()
    assert not wait_for(str(tmp_path / "never"), timeout_s=0.2, poll_s=0.05)
    assert time.monotonic() - started < 5


def test_parameter_server_input_is_a_dataset_creator_of_disjoint_per_worker_shards():
    from trainers import distribute

    ps = SimpleNamespace()
    calls = []

    def batches(batch_size):
        calls.append(batch_size)
        return tf.data.Dataset.range(12).batch(batch_size)

    plain = distribute.fit_input(tf.distribute.get_strategy(), batches, 4)
    assert [len(b) for b in plain] == [4, 4, 4]
    import unittest.mock as mock

    with mock.patch.object(distribute, "is_parameter_server", lambda s: s is ps):
        creator = distribute.fit_input(ps, batches, 4)
    assert isinstance(creator, __import__("tf_keras").utils.experimental.DatasetCreator)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        seen.append([b.numpy().tolist() for b in creator(context)])
    assert calls[-2:] == [2, 2]  # per-replica batch of the global 4
    assert seen == [[[0, 1], [4, 5], [8, 9]], [[2, 3], [6, 7], [10, 11]]]


@pytest.mark.slow
def test_without_tf_config_the_unified_trainer_trains_in_this_process(tmp_path, monkeypatch):
    """The default path of run_fn (KEEP's runs in the pipeline end-to-end test; a second run here costs a minute)."""
    from trainers import generic

    custom = {"model": dataclasses.asdict(registry.get("logistic_regression")), "config": {"cross_buckets": 64},
              "batch_size": 32, "epochs": 1, "patience": 2, "seed": 5, "model_name": "logistic_regression"}
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(generic.tft, "TFTransformOutput", FakeTransformOutput)
    root = str(tmp_path)
    write_data(root)
    generic.run_fn(fn_args(root, custom))
    record = training_record(root)
    assert record["distribution"] == {"strategy": "default", "replicas": 1}
    # an epoch is a pass over the train rows (counted: all of them), at most `epochs` of them
    assert record["train_rows"] == TRAIN_ROWS and record["steps_per_epoch"] == TRAIN_ROWS // 32
    assert record["examples_seen"] == record["epochs"] * TRAIN_ROWS == TRAIN_ROWS
    assert len(record["history"]["val_auc_click"]) == record["epochs"]
    served = tf.saved_model.load(os.path.join(root, "model", "Format-Serving")).signatures["serving_default"]
    click = served(examples=tf.constant(serialized(rows(16, 3))))["click"].numpy()
    assert click.shape == (16,) and np.std(click) > 0


def test_every_epoch_is_validated_on_the_same_rows(tmp_path, monkeypatch):
    """With nothing learnt (rate 0), every epoch's validation AUC and loss are the same: the early stop
    compares epochs, not samples (eval_steps covers half the validation rows here)."""
    from trainers import generic

    custom = {"model": dataclasses.asdict(registry.get("shared_bottom")),
              "config": {"learning_rate": 0.0, "embedding_dim": 4, "batch_size": 32},
              "epochs": 3, "patience": 5, "seed": 5, "model_name": "shared_bottom"}
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(generic.tft, "TFTransformOutput", FakeTransformOutput)
    root = str(tmp_path)
    write_data(root)
    args = fn_args(root, custom)
    args.train_steps = 100
    assert args.eval_steps * 32 < EVAL_ROWS
    generic.run_fn(args)
    history = training_record(root)["history"]
    assert len(history["val_auc_click"]) == 3
    for key in ("val_auc_click", "val_loss"):
        np.testing.assert_allclose(history[key], history[key][0], rtol=1e-6, err_msg=key)
    assert 0.3 < history["val_auc_click"][0] < 0.7 and history["val_auc_click"][0] != 0.5  # scored, not constant


@pytest.mark.slow
def test_two_workers_train_keep_and_only_the_chief_exports_what_one_process_would(tmp_path):
    root = str(tmp_path)
    write_data(root)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    def envs(ports):
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports[:2]]}
        return [child_env(TMPDIR=str(scratch), TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                                                    "index": i}}))
                for i in range(2)]

    seconds = run_children(envs, lambda ports: [["mwms", root]] * 2, root)
    print(f"2-worker MultiWorkerMirroredStrategy run: {seconds:.1f}s")
    chief, worker = (json.load(open(os.path.join(root, f"report_worker{i}.json"))) for i in range(2))
    assert chief["serving_dir_after_run_fn"] and worker["serving_dir_after_run_fn"]
    chief, worker = chief["exports"], worker["exports"]
    assert [e["dir"] for e in chief] == [os.path.join(root, "model", "Format-Serving")] and chief[0]["dir_left"]
    assert len(worker) == 1 and not worker[0]["dir"].startswith(root + os.sep + "model")
    assert worker[0]["dir"].startswith(str(scratch)) and not worker[0]["dir_left"] and not os.listdir(scratch)
    # Mirrored: both workers hold the same weights when they export.
    assert_same_digest(worker[0]["digest"], chief[0]["digest"])
    record = training_record(root)
    assert record["distribution"] == {"strategy": "multi_worker_mirrored", "replicas": 2, "workers": 2,
                                      "parameter_servers": 0}
    assert record["examples_seen"] == record["epochs"] * 4 * SMALL["batch_size"]  # a pass: 4 steps
    model = assert_predicts_like_a_single_process_export(root, tmp_path)
    assert_same_digest(digest(model), chief[0]["digest"])


def test_a_parameter_server_coordinator_describes_its_cluster(tmp_path):
    """describe() finds the cluster of a ParameterServerStrategy, whose resolver TF keeps private."""
    root = str(tmp_path)
    run_children(lambda ports: [child_env()], lambda ports: [["describe", root, ",".join(map(str, ports))]], root)
    with open(os.path.join(root, "describe.json")) as f:
        record = json.load(f)
    assert record["strategy"] == "parameter_server"
    assert (record["workers"], record["parameter_servers"]) == (2, 2)


@pytest.mark.slow
def test_parameter_servers_shard_the_big_embedding_and_the_export_predicts_as_one_process(tmp_path):
    root = str(tmp_path)
    write_data(root)
    seconds = run_children(lambda ports: [child_env()], lambda ports: [["ps", root, ",".join(map(str, ports))]], root)
    print(f"in-process ParameterServerStrategy run: {seconds:.1f}s")
    coordinator = json.load(open(os.path.join(root, "report_coordinator.json")))["exports"]
    assert [e["dir"] for e in coordinator] == [os.path.join(root, "model", "Format-Serving")]
    record = training_record(root)
    distribution = record["distribution"]
    assert distribution["strategy"] == "parameter_server"
    assert (distribution["workers"], distribution["parameter_servers"]) == (2, 2)
    sharded = distribution["sharded_variables"]
    assert [n for n in sharded if "embedding_user_id" in n] and set(sharded.values()) == {2}
    assert not [n for n in sharded if "embedding_user_id" not in n]  # small tables and dense layers stay whole
    model = assert_predicts_like_a_single_process_export(root, tmp_path)
    assert_same_digest(digest(model), coordinator[0]["digest"])
    assert os.path.exists(os.path.join(root, "model_run", "history.json"))


if __name__ == "__main__":
    _main(sys.argv[1:])
