"""Which tf.distribute strategy a trainer builds, fits and exports its model under.

The choice is read from the cluster that TF_CONFIG describes (Vertex AI sets it on
every replica of a multi-replica job; see docs/operations.md, "Multi-worker training"):

    TF_CONFIG absent, or one chief/worker task  -> the default strategy (one process)
    chief/worker tasks only, two or more         -> MultiWorkerMirroredStrategy
    any "ps" task                                -> ParameterServerStrategy

MultiWorkerMirroredStrategy keeps a full copy of every variable on each worker and
all-reduces the gradients: right while the embedding tables fit in one worker's
memory. Past that, ParameterServerStrategy shards the variables over the parameter
servers (`variable_partitioner`: tables of at least `min_shard_bytes` are cut along
the vocabulary axis, at most one shard per server), as TensorFlow recommends for
recommenders with large vocabularies.

Under MultiWorkerMirroredStrategy every worker runs the trainer end to end, export
included (saving may run collective ops every worker must join), but only the chief
writes where TFX looks: the others write to a local temporary folder that is removed
afterwards (`output_dirs`), then wait for the chief's export. Under ParameterServerStrategy only the coordinator (the
chief, or the task-less process of an in-process cluster) runs the trainer; the
"worker" and "ps" tasks serve it (`strategy_for_cluster` never returns on them).

Batches: `config.batch_size` stays the global batch of one training step in every
case (MultiWorkerMirroredStrategy splits it over the workers; under
ParameterServerStrategy each step is one worker's batch), so steps x batch, the
budget the training record reports, does not depend on the cluster.

An "evaluator" task (side-car evaluation) is not supported: the trainers validate
inside `fit`.

Example (a trainer module):
    def run_fn(fn_args):
        distribute.run_on_cluster(fn_args, train_and_export)

    def train_and_export(fn_args, strategy):  # fn_args' output folders are this worker's
        with strategy.scope():
            model = build_and_compile(...)
        train = distribute.fit_input(strategy, lambda batch: make_dataset(files, batch), batch_size, files)
        model.fit(train, steps_per_epoch=steps, ...)
        export(model, fn_args.serving_model_dir)
"""

import contextlib
import copy
import json
import os
import re
import shutil
import tempfile
import time
from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf
import tf_keras
from absl import logging

DEFAULT = "default"
MULTI_WORKER = "multi_worker_mirrored"
PARAMETER_SERVER = "parameter_server"

# ParameterServerStrategy leaves a variable whole below this size: small tables and
# dense layers gain nothing from a round trip to several servers.
MIN_SHARD_BYTES = 256 << 10
# How long a non-chief worker waits, after training, for the chief's export to appear.
CHIEF_EXPORT_WAIT_S = 600


def read_tf_config() -> Dict:
    """TF_CONFIG as a dict ({} when unset)."""
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def cluster_kind(cluster: Optional[Dict]) -> str:
    """DEFAULT, MULTI_WORKER or PARAMETER_SERVER for a cluster spec ({job: [address, ...]})."""
    cluster = cluster or {}
    if cluster.get("ps"):
        return PARAMETER_SERVER
    if worker_count(cluster) > 1:
        return MULTI_WORKER
    return DEFAULT


def worker_count(cluster: Dict) -> int:
    """Tasks that run training steps: chief and workers (parameter servers and evaluators do not)."""
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief(task_type: Optional[str], task_id: Optional[int], cluster: Optional[Dict]) -> bool:
    """Whether this task writes the trainer's outputs: the chief, else worker 0 of a chief-less cluster."""
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and int(task_id or 0) == 0 and not (cluster or {}).get("chief")


def strategy_for_cluster(cluster_resolver=None, min_shard_bytes: int = MIN_SHARD_BYTES) -> tf.distribute.Strategy:
    """The strategy of the cluster that `cluster_resolver` (default: TF_CONFIG's) describes.

    Create it before any other TensorFlow call of the process: MultiWorkerMirroredStrategy
    configures the collective ops at startup. On a ParameterServerStrategy cluster's
    "worker" and "ps" tasks this starts the task's server and serves until the job
    ends: it does not return.
    """
    if cluster_resolver is None:
        if not read_tf_config().get("cluster"):
            return tf.distribute.get_strategy()
        cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = cluster_resolver.cluster_spec().as_dict()
    kind = cluster_kind(cluster)
    logging.info("distribution: %s over %s (this task: %s %s)", kind, cluster,
                 cluster_resolver.task_type, cluster_resolver.task_id)
    if kind == DEFAULT:
        return tf.distribute.get_strategy()
    if kind == MULTI_WORKER:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver)
    if cluster_resolver.task_type in ("worker", "ps"):
        _serve(cluster_resolver)
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=len(cluster["ps"]))
    return tf.distribute.experimental.ParameterServerStrategy(cluster_resolver, variable_partitioner=partitioner)


def _serve(cluster_resolver):
    """A parameter server or worker task: run the coordinator's functions until the job is torn down."""
    server = tf.distribute.Server(
        cluster_resolver.cluster_spec(), job_name=cluster_resolver.task_type, task_index=cluster_resolver.task_id,
        protocol=cluster_resolver.rpc_layer or "grpc", start=True)
    server.join()


def is_parameter_server(strategy) -> bool:
    return isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)


def is_multi_worker(strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def writes_outputs(strategy) -> bool:
    """Whether this process writes the trainer's outputs (see `is_chief`)."""
    if not is_multi_worker(strategy):
        return True  # one process, or the parameter-server coordinator
    resolver = strategy.cluster_resolver
    return is_chief(resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())


@contextlib.contextmanager
def output_dirs(strategy, *directories: str):
    """`directories` on the chief; on the other workers, stand-ins in a temporary folder removed on exit.

    Each stand-in keeps its base name under its own parent, so paths derived from it
    (e.g. a sibling folder of the serving model dir) stay inside the temporary folder.
    """
    if writes_outputs(strategy):
        yield directories
        return
    resolver = strategy.cluster_resolver
    scratch = tempfile.mkdtemp(prefix=f"{resolver.task_type}{resolver.task_id}_")
    try:
        yield tuple(os.path.join(scratch, str(i), os.path.basename(os.path.normpath(d)))
                    for i, d in enumerate(directories))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fit_input(strategy, dataset_fn: Callable[[int], tf.data.Dataset], global_batch_size: int,
              files: Sequence[str] = ()):
    """What `model.fit` takes for the batches `dataset_fn(batch_size)` makes from `files` (patterns).

    Under ParameterServerStrategy each worker builds its own input pipeline: a
    DatasetCreator whose datasets have the per-replica batch and keep one input
    pipeline's share of the batches (they must repeat: give `fit` steps_per_epoch and
    validation_steps). Under MultiWorkerMirroredStrategy the dataset itself, which Keras
    rebatches and shards by file when there are at least as many files as workers, else
    by batch: every worker then reads every file and keeps its share, which only
    partitions the data if they all shuffle alike (the trainers seed every worker alike).
    Transform often writes a split as one file, and sharding that by file fails.
    """
    if is_parameter_server(strategy):
        def per_worker(input_context):
            dataset = dataset_fn(input_context.get_per_replica_batch_size(global_batch_size))
            return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

        return tf_keras.utils.experimental.DatasetCreator(per_worker)
    dataset = dataset_fn(global_batch_size)
    if is_multi_worker(strategy):
        workers = worker_count(strategy.cluster_resolver.cluster_spec().as_dict())
        matched = sum(len(tf.io.gfile.glob(p)) for p in files)
        policy = tf.data.experimental.AutoShardPolicy
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = policy.FILE if matched >= workers else policy.DATA
        dataset = dataset.with_options(options)
    return dataset


def _cluster_resolver(strategy):
    """The strategy's cluster resolver, or None. ParameterServerStrategy's public `cluster_resolver`
    is None (it reads the resolver from `extended`, which holds none) and the strategy keeps its own
    as `_cluster_resolver`: checked against TensorFlow 2.16.2; tests/trainers/test_distribute.py::
    test_a_parameter_server_coordinator_describes_its_cluster fails if that stops working."""
    return getattr(strategy, "cluster_resolver", None) or getattr(strategy, "_cluster_resolver", None)  # noqa: SLF001


def describe(strategy, model) -> Dict:
    """For the training record: the strategy's kind (as `cluster_kind`), cluster size, sharded variables."""
    kind = PARAMETER_SERVER if is_parameter_server(strategy) else MULTI_WORKER if is_multi_worker(strategy) else DEFAULT
    record = {"strategy": kind, "replicas": int(strategy.num_replicas_in_sync)}
    resolver = _cluster_resolver(strategy)
    if resolver is not None and (is_multi_worker(strategy) or is_parameter_server(strategy)):
        cluster = resolver.cluster_spec().as_dict()
        # A parameter-server chief coordinates; it runs no steps.
        record["workers"] = worker_count(cluster) if is_multi_worker(strategy) else len(cluster.get("worker", []))
        record["parameter_servers"] = len(cluster.get("ps", []))
    sharded = {}
    for v in model.variables:  # Keras lists a sharded variable's shards, named <variable>/part_<i>
        part = re.fullmatch(r"(.+)/part_\d+(:\d+)?", v.name)
        if part:
            sharded[part.group(1)] = sharded.get(part.group(1), 0) + 1
    if sharded:
        record["sharded_variables"] = sharded
    return record


def run_on_cluster(fn_args, train_and_export: Callable, min_shard_bytes: Optional[int] = None):
    """A TFX run_fn: `train_and_export(fn_args, strategy)` under the TF_CONFIG cluster's strategy.

    `fn_args`' output folders are this worker's (`for_this_worker`). `min_shard_bytes` (None:
    MIN_SHARD_BYTES) sets which variables ParameterServerStrategy shards.
    """
    # The process's first TensorFlow call: MultiWorkerMirroredStrategy configures collectives at startup.
    strategy = strategy_for_cluster(min_shard_bytes=MIN_SHARD_BYTES if min_shard_bytes is None else min_shard_bytes)
    with for_this_worker(strategy, fn_args) as mine:
        result = train_and_export(mine, strategy)
    if not writes_outputs(strategy):
        # TFX's Trainer executor fails a replica whose serving_model_dir is missing after
        # run_fn; the chief writes it, maybe a little later than this worker returns.
        wait_for(fn_args.serving_model_dir, CHIEF_EXPORT_WAIT_S)
    return result


def wait_for(path: str, timeout_s: float, poll_s: float = 1.0) -> bool:
    """Whether `path` exists within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not tf.io.gfile.exists(path):
        if time.monotonic() > deadline:
            logging.warning("%s did not appear within %ss", path, timeout_s)
            return False
        time.sleep(poll_s)
    return True


@contextlib.contextmanager
def for_this_worker(strategy, fn_args):
    """TFX `fn_args` whose output folders (serving_model_dir, model_run_dir) are this worker's (`output_dirs`)."""
    with output_dirs(strategy, fn_args.serving_model_dir, fn_args.model_run_dir) as (serving, run):
        if (serving, run) == (fn_args.serving_model_dir, fn_args.model_run_dir):
            yield fn_args
            return
        mine = copy.copy(fn_args)
        mine.serving_model_dir, mine.model_run_dir = serving, run
        yield mine
