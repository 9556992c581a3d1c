"""Compiles the keep_samd pipeline for Kubeflow Pipelines (KFP v2) and optionally submits it.

`tfx ... --engine=kubeflow` is broken in TFX 1.16 (it imports the removed KFP v1
runner), so this compiles with KubeflowV2DagRunner and submits with the kfp 2 client:

    python -m pipelines.kubeflow_v2_runner --image REGISTRY/keep_samd:TAG \\
        --output gs://BUCKET/keep_samd --data gs://BUCKET/data \\
        --beam-args "--runner=DataflowRunner --project=P --region=R --temp_location=gs://BUCKET/tmp" \\
        [--submit --host https://KFP_HOST]

The image must contain this repository installed (`pip install -e .` over the lock),
as the components import `models.*` and `components.*`. The same pipeline JSON runs
on Vertex AI Pipelines:

    tfx pipeline create --pipeline_path=pipelines/kubeflow_v2_runner.py --engine=vertex

The options are built as the local runner builds them: every KEEP_SAMD_* variable of
pipelines/options.py (docs/options.md) is read, and the flags below win over
their variables. The tfx CLI runs this file without arguments: then the variables alone,
with KEEP_SAMD_IMAGE and KEEP_SAMD_VERTEX_TRAINING for the two flags only this runner has.

Multi-worker training (`--vertex-training`, a JSON object): the KEEP and unified
Trainers then run as Vertex AI custom jobs over worker pools instead of inside their
pipeline pod, e.g.

    {"project": "P", "region": "us-central1",
     "worker_pool_specs": [
        {"machine_spec": {"machine_type": "n1-standard-8"}, "replica_count": 1},
        {"machine_spec": {"machine_type": "n1-standard-8"}, "replica_count": 3},
        {"machine_spec": {"machine_type": "n1-highmem-8"}, "replica_count": 2}],
     "trainers": ["KeepTrainer"]}

("trainers" defaults to every distribution-aware Trainer.)

Vertex sets TF_CONFIG on every replica (pool 0 = chief, 1 = workers, 2 = parameter
servers) and trainers.distribute picks the strategy from it: chief and workers only ->
MultiWorkerMirroredStrategy, a parameter-server pool -> ParameterServerStrategy with
the large embedding tables sharded. A pool without container_spec runs --image.
"""

import argparse
import dataclasses
import json
import os
import shlex
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tfx import v1 as tfx  # noqa: E402

from pipelines.keep_samd import GENERIC_RUN_FN, create_pipeline  # noqa: E402
from pipelines.options import PIPELINE_NAME, PipelineOptions  # noqa: E402


# The Trainers whose run_fn trains under the TF_CONFIG cluster's strategy (trainers.distribute).
DISTRIBUTED_RUN_FNS = (GENERIC_RUN_FN,)


def use_vertex_training(pipeline, settings: dict, image: str):
    """Makes the distribution-aware Trainers of `pipeline` run as Vertex AI custom jobs (see the module doc).

    `settings`: {"project", "region", "worker_pool_specs", "trainers" (optional ids)}.
    """
    from tfx.dsl.components.base import executor_spec
    from tfx.extensions.google_cloud_ai_platform.trainer import executor as vertex_trainer
    from tfx.utils import json_utils

    unknown = set(settings) - {"project", "region", "worker_pool_specs", "trainers"}
    missing = {"project", "region", "worker_pool_specs"} - set(settings)
    if unknown or missing:
        raise ValueError(f"vertex training settings: unknown {sorted(unknown)}, missing {sorted(missing)}")
    from components.scenario_trainer import ScenarioTrainer

    # A ScenarioTrainer needs its own executor (it hands run_fn the scenario table): not on Vertex's.
    eligible = {c.id: c for c in pipeline.components
                if c.exec_properties.get("run_fn") in DISTRIBUTED_RUN_FNS and not isinstance(c, ScenarioTrainer)}
    wanted = settings.get("trainers") or sorted(eligible)
    if set(wanted) - set(eligible):
        raise ValueError(f"trainers {sorted(set(wanted) - set(eligible))} cannot train on several workers; "
                         f"these can: {sorted(eligible)}")
    pools = [{**pool, "container_spec": pool.get("container_spec") or {"image_uri": image}}
             for pool in settings["worker_pool_specs"]]
    for node_id in wanted:
        trainer = eligible[node_id]
        custom = json.loads(trainer.exec_properties.get("custom_config") or "{}")
        custom.update({tfx.extensions.google_cloud_ai_platform.ENABLE_VERTEX_KEY: True,
                       tfx.extensions.google_cloud_ai_platform.VERTEX_REGION_KEY: settings["region"],
                       tfx.extensions.google_cloud_ai_platform.TRAINING_ARGS_KEY: {
                           "project": settings["project"], "worker_pool_specs": pools}})
        trainer.exec_properties["custom_config"] = json_utils.dumps(custom)
        # Vertex's executor submits the custom job; each replica runs the stock Trainer executor (our run_fn).
        trainer.executor_spec = executor_spec.ExecutorClassSpec(vertex_trainer.GenericExecutor)
    return pipeline


def compile_pipeline(options: PipelineOptions, image: str, output_file: str, vertex_training=None) -> str:
    """Writes the KFP v2 pipeline spec (JSON) and returns its path."""
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file),
    )
    pipeline = create_pipeline(options, local=False)
    if vertex_training:
        use_vertex_training(pipeline, vertex_training, image)
    runner.run(pipeline, write_out=True)
    written = written_file(runner)
    if os.path.exists(written):  # local-path: the compiler writes a local file
        _always_run(written, "RawDataCheck")
    return written


def written_file(runner) -> str:
    """The pipeline file `runner` wrote. The tfx CLI's patcher points the runner at a folder of
    its own (tfx/tools/cli/handler/dag_runner_patcher.py), and KubeflowV2DagRunner has no
    public accessor for it: private attributes, checked against TFX 1.16.0
    (tests/pipelines/test_kubeflow_v2_runner.py fails if they change)."""
    return os.path.join(runner._output_dir, runner._output_filename)  # noqa: SLF001


def _always_run(pipeline_file: str, task: str) -> None:
    """Turns KFP's cache off for `task` in the compiled spec.

    RawDataCheck reads the data folder named by a string; locally its driver puts the
    folder's fingerprint into the cache key (components/raw_data_check/driver.py), but
    KFP runs no custom driver, so a cached check would miss a changed file. Run every
    time, its new artifacts also rerun what reads them; ExampleGen keeps its own
    fingerprinting driver on KFP.
    """
    with open(pipeline_file) as f:  # local-path: the compiler writes a local file
        spec = json.load(f)
    tasks = spec.get("pipelineSpec", spec)["root"]["dag"]["tasks"]
    tasks[task].pop("cachingOptions", None)
    with open(pipeline_file, "w") as f:  # local-path: as above
        json.dump(spec, f, indent=2, sort_keys=True)


# Where the cluster's output and data folders are when neither a flag nor a variable says.
DEFAULT_FOLDERS = {"KEEP_SAMD_OUTPUT": "gs://YOUR_BUCKET/keep_samd", "KEEP_SAMD_DATA": "gs://YOUR_BUCKET/data"}


def options_from(args: argparse.Namespace, env=None) -> PipelineOptions:
    """The pipeline's options from every KEEP_SAMD_* variable (PipelineOptions.from_env, as the
    local runner reads them), then this command's flags, which win."""
    env = os.environ if env is None else env
    options = PipelineOptions.from_env({**DEFAULT_FOLDERS, **{k: v for k, v in env.items() if v}})
    flags = {"output_dir": args.output, "data_root": args.data, "schema_file": args.schema,
             "beam_pipeline_args": tuple(shlex.split(args.beam_args)) if args.beam_args else None,
             "train_steps": args.train_steps}
    return dataclasses.replace(options, **{k: v for k, v in flags.items() if v is not None})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    env = os.environ
    p.add_argument("--image", default=env.get("KEEP_SAMD_IMAGE", "keep_samd:latest"),
                   help="container image with this repository installed (env KEEP_SAMD_IMAGE)")
    p.add_argument("--output", default=None,
                   help="output folder on shared storage: pipeline root, pushed models (env KEEP_SAMD_OUTPUT)")
    p.add_argument("--data", default=None,
                   help="raw data folder (day=N/*.csv, scenarios.csv) readable by the pods (env KEEP_SAMD_DATA)")
    p.add_argument("--schema", default=None, help="schema.pbtxt path inside the image (default: the repository's)")
    p.add_argument("--beam-args", default=None,
                   help="Beam pipeline args for the cluster runner (env KEEP_SAMD_BEAM_ARGS)")
    p.add_argument("--train-steps", type=int, default=None, help="env KEEP_SAMD_TRAIN_STEPS")
    p.add_argument("--vertex-training", default=env.get("KEEP_SAMD_VERTEX_TRAINING"),
                   help="JSON object: run the KEEP and unified Trainers on Vertex AI worker pools "
                        "(see the module doc; env KEEP_SAMD_VERTEX_TRAINING)")
    p.add_argument("--pipeline-file", default=f"{PIPELINE_NAME}_pipeline.json")
    p.add_argument("--submit", action="store_true", help="submit a run with the kfp client")
    p.add_argument("--host", default=None, help="KFP API host for --submit")
    a = p.parse_args(argv)
    options = options_from(a, env)
    path = compile_pipeline(options, a.image, a.pipeline_file,
                            json.loads(a.vertex_training) if a.vertex_training else None)
    print(f"compiled {path}")
    if a.submit:
        import kfp

        run = kfp.Client(host=a.host).create_run_from_pipeline_package(path, arguments={})
        print(f"submitted run {run.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
