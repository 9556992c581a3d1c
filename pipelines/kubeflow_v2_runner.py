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

(the tfx CLI runs this file without arguments: every flag has an environment default,
KEEP_SAMD_IMAGE, KEEP_SAMD_OUTPUT, KEEP_SAMD_DATA, KEEP_SAMD_BEAM_ARGS).
"""

import argparse
import dataclasses
import os
import shlex
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tfx import v1 as tfx  # noqa: E402

from pipelines.keep_samd import create_pipeline  # noqa: E402
from pipelines.options import PIPELINE_NAME, PipelineOptions  # noqa: E402


def compile_pipeline(options: PipelineOptions, image: str, output_file: str) -> str:
    """Writes the KFP v2 pipeline spec (JSON) and returns its path."""
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(output_file)),
        output_filename=os.path.basename(output_file),
    )
    runner.run(create_pipeline(options, local=False), write_out=True)
    return output_file


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    env = os.environ
    p.add_argument("--image", default=env.get("KEEP_SAMD_IMAGE", "keep_samd:latest"),
                   help="container image with this repository installed (env KEEP_SAMD_IMAGE)")
    p.add_argument("--output", default=env.get("KEEP_SAMD_OUTPUT", "gs://YOUR_BUCKET/keep_samd"),
                   help="output folder on shared storage: pipeline root, pushed models (env KEEP_SAMD_OUTPUT)")
    p.add_argument("--data", default=env.get("KEEP_SAMD_DATA", "gs://YOUR_BUCKET/data"),
                   help="raw data folder (day=N/*.csv, scenarios.csv) readable by the pods (env KEEP_SAMD_DATA)")
    p.add_argument("--schema", default=None, help="schema.pbtxt path inside the image (default: the repository's)")
    p.add_argument("--beam-args", default=env.get("KEEP_SAMD_BEAM_ARGS"),
                   help="Beam pipeline args for the cluster runner (env KEEP_SAMD_BEAM_ARGS)")
    p.add_argument("--train-steps", type=int, default=None)
    p.add_argument("--pipeline-file", default=f"{PIPELINE_NAME}_pipeline.json")
    p.add_argument("--submit", action="store_true", help="submit a run with the kfp client")
    p.add_argument("--host", default=None, help="KFP API host for --submit")
    a = p.parse_args(argv)
    options = PipelineOptions(output_dir=a.output, data_root=a.data)
    if a.schema:
        options = dataclasses.replace(options, schema_file=a.schema)
    if a.beam_args:
        options = dataclasses.replace(options, beam_pipeline_args=tuple(shlex.split(a.beam_args)))
    if a.train_steps:
        options = dataclasses.replace(options, train_steps=a.train_steps)
    path = compile_pipeline(options, a.image, a.pipeline_file)
    print(f"compiled {path}")
    if a.submit:
        import kfp

        run = kfp.Client(host=a.host).create_run_from_pipeline_package(path, arguments={})
        print(f"submitted run {run.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
