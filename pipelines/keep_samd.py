"""The keep_samd pipeline definition.

RawDataCheck -> CsvExampleGen -> StatisticsGen -> ImportSchemaGen -> ExampleValidator
-> ValidationGate -> Transform -> Trainer (KEEP) -> Pusher (which also rewrites
<output>/serving/models.config for TF Serving); then, unless disabled, SAMD:
ScenarioSimilarity (Beam, on ExampleGen's output) -> SamdTrainer (KEEP as the
frozen teacher) -> SamdPusher (one TF Serving model `samd_<scenario>` per student);
and one Trainer + Pusher per unified model and baseline (PEPNet, ADL, GRec,
shared-bottom, MMoE), each its own TF Serving model.
"""

import os

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec
from tfx.proto import example_gen_pb2

from components.raw_data_check import RawDataCheck
from components.samd_pusher import SamdPusher
from components.samd_trainer import SamdTrainer
from components.scenario_similarity.component import ScenarioSimilarity
from components.validation_gate import ValidationGate
from components.raw_data_check.checks import RawDataError
from components.serving_pusher import executor as serving_pusher
from pipelines.options import PIPELINE_NAME, PipelineOptions

KEEP_MODEL_NAME = "keep_general"


def create_pipeline(options: PipelineOptions, local: bool = True) -> tfx.dsl.Pipeline:
    """The pipeline; `local=False` (Kubeflow) leaves the metadata store and path checks to the cluster."""
    if local and not os.path.isdir(options.data_root):
        raise RawDataError(f"{options.data_root}: data folder does not exist (generate one with "
                           f"`python -m synthetic.generate --output {options.data_root}` or set KEEP_SAMD_DATA)")
    if local and not os.path.isfile(options.schema_file):
        raise FileNotFoundError(f"{options.schema_file}: schema file not found")

    raw_check = RawDataCheck(data_root=options.data_root)
    example_gen = tfx.components.CsvExampleGen(
        input_base=options.data_root,
        input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all", pattern="day=*/*.csv")]),
        output_config=example_gen_pb2.Output(
            split_config=example_gen_pb2.SplitConfig(
                splits=[
                    example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
                    example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
                ]
            )
        ),
    )
    example_gen.add_upstream_node(raw_check)
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=options.schema_file)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    gate = ValidationGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
    )
    transform.add_upstream_node(gate)
    trainer = tfx.components.Trainer(
        run_fn="models.keep_trainer.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=options.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=options.eval_steps),
        custom_config={"keep": dict(options.keep), "epochs": options.epochs, "model_name": KEEP_MODEL_NAME},
    ).with_id("KeepTrainer")
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=options.serving_model_dir(KEEP_MODEL_NAME)
            )
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(serving_pusher.Executor),
    ).with_id("KeepPusher")

    components = [raw_check, example_gen, statistics_gen, schema_gen, example_validator, gate, transform,
                  trainer, pusher]
    if options.samd_enabled:
        samd_config = {k: v for k, v in options.samd.items() if k not in ("enabled", "train_steps")}
        similarity = ScenarioSimilarity(
            examples=example_gen.outputs["examples"], data_root=options.data_root,
            alpha=options.similarity_alpha, top_g=int(samd_config.get("samd", {}).get("top_g", 2)),
        )
        similarity.add_upstream_node(gate)
        samd_trainer = SamdTrainer(
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            teacher=trainer.outputs["model"],
            similarity=similarity.outputs["similarity"],
            data_root=options.data_root,
            train_steps=options.samd_train_steps,
            eval_steps=options.eval_steps,
            custom_config=samd_config,
        )
        samd_pusher = SamdPusher(model=samd_trainer.outputs["model"], serving_dir=options.serving_dir)
        samd_pusher.add_upstream_node(pusher)  # one writer of models.config at a time
        components += [similarity, samd_trainer, samd_pusher]

    for name in options.unified_models:
        title = "".join(part.capitalize() for part in name.split("_"))
        unified_trainer = tfx.components.Trainer(
            run_fn="models.unified_trainer.run_fn",
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            train_args=tfx.proto.TrainArgs(num_steps=int(options.unified.get("train_steps", options.train_steps))),
            eval_args=tfx.proto.EvalArgs(num_steps=options.eval_steps),
            custom_config={"model": name, "model_name": name, "config": options.unified.get("configs", {}).get(name, {}),
                           "epochs": options.epochs},
        ).with_id(f"{title}Trainer")
        unified_pusher = tfx.components.Pusher(
            model=unified_trainer.outputs["model"],
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=options.serving_model_dir(name))),
            custom_executor_spec=executor_spec.ExecutorClassSpec(serving_pusher.Executor),
        ).with_id(f"{title}Pusher")
        unified_pusher.add_upstream_node(components[-1])  # pushers one after the other: one models.config writer
        components += [unified_trainer, unified_pusher]

    return tfx.dsl.Pipeline(
        # KFP v2 names allow no underscore: the same pipeline is `keep-samd` there.
        pipeline_name=PIPELINE_NAME if local else PIPELINE_NAME.replace("_", "-"),
        pipeline_root=options.pipeline_root,
        components=components,
        enable_cache=False,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(options.metadata_path) if local else None
        ),
        beam_pipeline_args=list(options.beam_pipeline_args),
    )
