"""The keep_samd pipeline definition.

RawDataCheck -> CsvExampleGen (a TimeSplitExampleGen: train / validation / test by day)
-> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> ValidationGate -> Transform
(analyzers fitted on train) -> Trainer (KEEP); then, unless disabled, SAMD:
ScenarioSimilarity (Beam, on ExampleGen's train split) -> SamdTrainer (KEEP as the
frozen teacher); and one Trainer per unified model and baseline (PEPNet, ADL,
GRec, shared-bottom, MMoE, the logistic-regression floor), all with one batch size. Every trained model then goes through a
ModelEvaluator (metrics per scenario and task on the raw test split, and a
blessing) and a pusher that pushes it only when blessed: KEEP and the unified
models as one TF Serving model each, SAMD as one model `samd_<scenario>` per
student; each push rewrites <output>/serving/models.config. EvaluationReport
ends the run: report.md/.html, PNG plots and metrics.json.

KEEP stage two, unless disabled: KnowledgeCenter (the cacheable knowledge heads and
their cache) -> KnowledgePusher (`keep_knowledge`, a version per run, the newest 5
served) -> DownstreamTrainer (the sub-scenarios' model with the knowledge plug-in,
warm-started from the last pushed one when incremental) -> its evaluator and pusher
(`keep_downstream`).
"""

import os
from typing import Dict

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.downstream_trainer import DownstreamTrainer
from components.evaluation_report.component import EvaluationReport
from components.knowledge_center import KnowledgeCenter
from components.knowledge_pusher import KnowledgePusher
from components.model_evaluator.component import ModelEvaluator
from components.raw_data_check import RawDataCheck
from components.samd_pusher import SamdPusher
from components.samd_trainer import SamdTrainer
from components.scenario_similarity.component import ScenarioSimilarity
from components.validation_gate import ValidationGate
from components.raw_data_check.checks import RawDataError
from components.serving_pusher import executor as serving_pusher
from components.time_split_example_gen import TimeSplit
from pipelines.options import PIPELINE_NAME, OptionsError, PipelineOptions, example_gen as make_example_gen

KEEP_MODEL_NAME = "keep_general"
DOWNSTREAM_MODEL_NAME = "keep_downstream"
SAMD_MODEL_NAME = "samd"  # its students are served as samd_<scenario>


def _head(options: PipelineOptions) -> Dict:
    """RawDataCheck -> ExampleGen (time split) -> StatisticsGen / ExampleValidator / ValidationGate -> Transform."""
    TimeSplit.from_dict(options.time_split)  # a bad KEEP_SAMD_SPLIT fails here, not in ExampleGen
    raw_check = RawDataCheck(data_root=options.data_root)
    example_gen = make_example_gen(options.data_root, options.time_split)
    example_gen.add_upstream_node(raw_check)
    raw_examples = example_gen.outputs["examples"]
    statistics_gen = tfx.components.StatisticsGen(examples=raw_examples)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=options.schema_file)
    schema = schema_gen.outputs["schema"]
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema
    )
    gate = ValidationGate(anomalies=example_validator.outputs["anomalies"])
    # Analyzers (vocabularies, z-scores, exposure counts) are fitted on `train` only: Transform's default.
    transform = tfx.components.Transform(
        examples=raw_examples,
        schema=schema,
        preprocessing_fn="models.preprocessing.preprocessing_fn",
    )
    transform.add_upstream_node(gate)
    return {"examples": raw_examples, "transformed": transform.outputs["transformed_examples"],
            "graph": transform.outputs["transform_graph"], "schema": schema, "gate": gate,
            "components": [raw_check, example_gen, statistics_gen, schema_gen, example_validator, gate, transform]}


def _imported_head(options: PipelineOptions, imported) -> Dict:
    """Importers of an earlier ExampleGen + Transform (`pipelines.transform_only.TransformResult`)."""
    from pipelines.transform_only import examples_importer

    raw = examples_importer(imported.raw_examples, "RawExamplesImporter")
    transformed = examples_importer(imported.transformed_examples, "TransformedExamplesImporter")
    graph = tfx.dsl.Importer(source_uri=imported.transform_graph,
                             artifact_type=tfx.types.standard_artifacts.TransformGraph).with_id("TransformGraphImporter")
    schema_gen = tfx.components.ImportSchemaGen(schema_file=options.schema_file)
    return {"examples": raw.outputs["result"], "transformed": transformed.outputs["result"],
            "graph": graph.outputs["result"], "schema": schema_gen.outputs["schema"],
            "components": [raw, transformed, graph, schema_gen]}


def create_pipeline(options: PipelineOptions, local: bool = True, imported=None) -> tfx.dsl.Pipeline:
    """The pipeline; `local=False` (Kubeflow) leaves the metadata store and path checks to the cluster.

    `imported`: a `pipelines.transform_only.TransformResult` (an earlier ExampleGen + Transform
    of the same data) to train and evaluate on instead of running the head again
    (bench/quality.py: one Transform, several training seeds).
    """
    if local and not os.path.isdir(options.data_root):
        raise RawDataError(f"{options.data_root}: data folder does not exist (generate one with "
                           f"`python -m synthetic.generate --output {options.data_root}` or set KEEP_SAMD_DATA)")
    if local and not os.path.isfile(options.schema_file):
        raise FileNotFoundError(f"{options.schema_file}: schema file not found")

    head = _head(options) if imported is None else _imported_head(options, imported)
    raw_examples, transformed, graph, schema = (head[k] for k in ("examples", "transformed", "graph", "schema"))
    gate = head.get("gate")  # none when the head is imported
    components = list(head["components"])
    def keep_trainer(node_id, model_name, **extra):
        """A KEEP Trainer on the transformed examples; `extra` joins its custom_config."""
        return tfx.components.Trainer(
            run_fn="models.keep_trainer.run_fn",
            examples=transformed,
            transform_graph=graph,
            schema=schema,
            train_args=tfx.proto.TrainArgs(splits=["train"], num_steps=options.train_steps),
            eval_args=tfx.proto.EvalArgs(splits=["validation"], num_steps=options.eval_steps),
            custom_config={"keep": dict(options.keep), "epochs": options.epochs, "model_name": model_name,
                           "seed": options.seed, **extra},
        ).with_id(node_id)

    trainer = keep_trainer("KeepTrainer", KEEP_MODEL_NAME)
    evaluations = {}

    knowledge_inputs = {}  # model name -> the cache its evaluator looks its input up in

    def evaluator(name, model, component_id):
        """A ModelEvaluator for `name`; its baseline (if any) must have been evaluated before."""
        base = options.blessing_baselines.get(name)
        node = ModelEvaluator(
            examples=raw_examples, model=model, model_name=name, data_root=options.data_root,
            serving_dir=options.serving_dir, blessing_config=options.blessing_config(name),
            baseline_evaluation=evaluations[base].outputs["evaluation"] if base else None,
            knowledge=knowledge_inputs.get(name),
        ).with_id(component_id)
        evaluations[name] = node
        return node

    def pusher_of(name, model, blessing, component_id):
        return tfx.components.Pusher(
            model=model, model_blessing=blessing,
            push_destination=tfx.proto.PushDestination(
                filesystem=tfx.proto.PushDestination.Filesystem(base_directory=options.serving_model_dir(name))),
            custom_executor_spec=executor_spec.ExecutorClassSpec(serving_pusher.Executor),
        ).with_id(component_id)

    trained = {KEEP_MODEL_NAME: (trainer, "Keep")}
    components.append(trainer)
    samd_trainer = None
    if options.samd_enabled:
        samd_config = {k: v for k, v in options.samd.items() if k not in ("enabled", "train_steps", "teacher")}
        teacher = trainer
        if options.samd_teacher == "super":  # SAMD's paper (4.1): the general model of the super scenario
            teacher = keep_trainer("SamdTeacherTrainer", "samd_teacher", roles=["super"],
                                   scenarios_csv=os.path.join(options.data_root, "scenarios.csv"))
            components.append(teacher)
        similarity = ScenarioSimilarity(
            examples=raw_examples, data_root=options.data_root,
            alpha=options.similarity_alpha, top_g=int(samd_config.get("samd", {}).get("top_g", 2)),
        )
        if gate is not None:
            similarity.add_upstream_node(gate)
        samd_trainer = SamdTrainer(
            examples=transformed,
            transform_graph=graph,
            teacher=teacher.outputs["model"],
            similarity=similarity.outputs["similarity"],
            data_root=options.data_root,
            train_steps=options.samd_train_steps,
            eval_steps=options.eval_steps,
            custom_config={**samd_config, "seed": options.seed},
        )
        trained[SAMD_MODEL_NAME] = (samd_trainer, "Samd")
        components += [similarity, samd_trainer]

    if options.downstream_enabled:
        steps = int(options.downstream.get("train_steps", options.train_steps))
        knowledge_center = KnowledgeCenter(
            examples=transformed, transform_graph=graph,
            train_steps=int(options.downstream.get("knowledge_train_steps", steps)),
            custom_config={"knowledge": options.downstream.get("knowledge", {}), "seed": options.seed,
                           "epochs": options.downstream.get("epochs", 3)})
        knowledge_pusher = KnowledgePusher(knowledge=knowledge_center.outputs["knowledge"],
                                           serving_dir=options.serving_dir)
        plugged = bool(options.downstream.get("plugged", True))
        base_model = None
        components += [knowledge_center, knowledge_pusher]
        if options.downstream_spans:
            # Incremental: warm-start from the last blessed (so pushed) downstream model of earlier runs.
            latest = tfx.dsl.Resolver(
                strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
                model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model,
                                      producer_component_id="DownstreamTrainer", output_key="model"),
                model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                               producer_component_id="DownstreamEvaluator", output_key="blessing"),
            ).with_id("LatestDownstreamModel")
            base_model = latest.outputs["model"]
            components.append(latest)
        downstream = DownstreamTrainer(
            examples=transformed, transform_graph=graph,
            data_root=options.data_root, train_steps=steps,
            knowledge=knowledge_center.outputs["knowledge"] if plugged else None, base_model=base_model,
            custom_config={**options.downstream_config(), "model_name": DOWNSTREAM_MODEL_NAME, "seed": options.seed},
        ).with_id("DownstreamTrainer")
        downstream.add_upstream_node(knowledge_pusher)  # trained on a cache version that is served
        if plugged:
            knowledge_inputs[DOWNSTREAM_MODEL_NAME] = knowledge_center.outputs["knowledge"]
        trained[DOWNSTREAM_MODEL_NAME] = (downstream, "Downstream")
        components.append(downstream)

    corrupted = dict(options.unified.get("corrupt_labels", {}))
    bad = {m: c for m, c in corrupted.items() if m not in options.unified_models or c not in ("shuffle", "invert")}
    if bad:
        raise OptionsError(f"KEEP_SAMD_UNIFIED corrupt_labels {bad}: expected {{trained unified model: "
                         f"'shuffle' | 'invert'}}")
    for name in options.unified_models:
        title = "".join(part.capitalize() for part in name.split("_"))
        unified_trainer = tfx.components.Trainer(
            run_fn="models.unified_trainer.run_fn",
            examples=transformed,
            transform_graph=graph,
            schema=schema,
            train_args=tfx.proto.TrainArgs(splits=["train"],
                                           num_steps=int(options.unified.get("train_steps", options.train_steps))),
            eval_args=tfx.proto.EvalArgs(splits=["validation"], num_steps=options.eval_steps),
            custom_config={"model": name, "model_name": name, "config": options.unified.get("configs", {}).get(name, {}),
                           "epochs": options.epochs, "corrupt_labels": corrupted.get(name),
                           "batch_size": options.unified.get("batch_size"), "seed": options.seed},  # one batch for all: equal budgets
        ).with_id(f"{title}Trainer")
        trained[name] = (unified_trainer, title)
        components.append(unified_trainer)

    # Evaluators, each after the baseline it must beat; then the pushers one after the
    # other (one writer of models.config at a time), each pushing only a blessed model.
    pending = list(trained)
    while pending:
        ready = [n for n in pending if options.blessing_baselines.get(n) in (None, *evaluations)]
        if not ready:
            raise OptionsError(f"KEEP_SAMD_BLESSING baselines form a cycle among {pending}")
        for name in ready:
            node, title = trained[name]
            components.append(evaluator(name, node.outputs["model"], f"{title}Evaluator"))
            pending.remove(name)
    previous_pusher = knowledge_pusher if options.downstream_enabled else None
    for name, (node, title) in trained.items():
        blessing = evaluations[name].outputs["blessing"]
        if name == SAMD_MODEL_NAME:
            push = SamdPusher(model=node.outputs["model"], serving_dir=options.serving_dir, model_blessing=blessing)
        else:
            push = pusher_of(name, node.outputs["model"], blessing, f"{title}Pusher")
        if previous_pusher is not None:
            push.add_upstream_node(previous_pusher)
        previous_pusher = push
        components.append(push)

    report = EvaluationReport(
        evaluations={name: node.outputs["evaluation"] for name, node in evaluations.items()},
        transfer_report=samd_trainer.outputs["transfer_report"] if samd_trainer is not None else None,
    )
    report.add_upstream_node(previous_pusher)  # the report says what was pushed
    components.append(report)

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
