"""The keep_samd pipeline definition.

RawDataCheck -> CsvExampleGen (a TimeSplitExampleGen: train / validation / test by day)
-> StatisticsGen -> ImportSchemaGen -> ExampleValidator -> ValidationGate -> Transform
(analyzers fitted on train) -> Trainer (KEEP; with KEEP_SAMD_TUNER, after a Tuner whose best
hyperparameters it trains with, as every Keras model's Trainer); then, unless disabled, SAMD:
ScenarioSimilarity (Beam, on ExampleGen's train split) -> SamdTrainer (KEEP as the
frozen teacher); and one Trainer per unified model and baseline (PEPNet, ADL,
GRec, shared-bottom, MMoE, the logistic-regression floor), all with one batch size. Every trained model then goes through a
ModelEvaluator (metrics per scenario and task on the raw test split, and a
blessing; the floor's evaluator runs first, the others compare with it) and a
pusher that pushes it only when blessed: KEEP and the unified models as one TF
Serving model each, SAMD as one model `samd_<scenario>` per student; each push
rewrites <output>/serving/models.config. EvaluationReport ends the run:
report.md/.html, PNG plots and metrics.json.

KEEP stage two, unless disabled: KnowledgeCenter (the cacheable knowledge heads and
their cache) -> KnowledgePusher (`keep_knowledge`, a version per run, the newest 5
served) -> DownstreamTrainer (the sub-scenarios' model with the knowledge plug-in,
warm-started from the last pushed one when incremental) -> its evaluator and pusher
(`keep_downstream`).
"""

import dataclasses
import os
from typing import Dict, List, Optional

from tfx import v1 as tfx

from components.downstream_trainer import DownstreamTrainer
from components.evaluation_report.component import EvaluationReport
from components.knowledge_center import KnowledgeCenter
from components.knowledge_pusher import KnowledgePusher
from components.model_evaluator.component import ModelEvaluator
from components.raw_data_check import RawDataCheck
from components.samd_pusher import SamdPusher
from components.samd_trainer import SamdTrainer
from components.scenario_similarity.component import ScenarioSimilarity
from components.scenario_trainer import ScenarioTrainer
from components.validation_gate import ValidationGate
from components.raw_data_check.checks import RawDataError
from components.serving_pusher import ServingPusher
from models import registry
from models.samd import SamdConfig
from pipelines.options import PIPELINE_NAME, PipelineOptions, example_gen as make_example_gen

GENERIC_RUN_FN = "trainers.generic.run_fn"  # the Trainer of every registered Keras model
TUNER_FN = "trainers.tuner.tuner_fn"  # the Tuner of every registered Keras model (KEEP_SAMD_TUNER)


def _head(options: PipelineOptions) -> Dict:
    """RawDataCheck -> ExampleGen (time split) -> StatisticsGen / ExampleValidator / ValidationGate -> Transform."""
    raw_check = RawDataCheck(data_root=options.data_root)
    example_gen = make_example_gen(options.data_root, dataclasses.asdict(options.time_split), options.schema_file)
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
            "scenarios": raw_check.outputs["scenarios"],
            "components": [raw_check, example_gen, statistics_gen, schema_gen, example_validator, gate, transform]}


def _imported_head(options: PipelineOptions, imported) -> Dict:
    """Importers of an earlier ExampleGen + Transform (`pipelines.transform_only.TransformResult`)."""
    from pipelines.transform_only import examples_importer

    raw = examples_importer(imported.raw_examples, "RawExamplesImporter")
    transformed = examples_importer(imported.transformed_examples, "TransformedExamplesImporter")
    graph = tfx.dsl.Importer(source_uri=imported.transform_graph,
                             artifact_type=tfx.types.standard_artifacts.TransformGraph).with_id("TransformGraphImporter")
    schema_gen = tfx.components.ImportSchemaGen(schema_file=options.schema_file)
    raw_check = RawDataCheck(data_root=options.data_root)  # the scenario table (cheap: no example is written)
    return {"examples": raw.outputs["result"], "transformed": transformed.outputs["result"],
            "graph": graph.outputs["result"], "schema": schema_gen.outputs["schema"],
            "scenarios": raw_check.outputs["scenarios"],
            "components": [raw_check, raw, transformed, graph, schema_gen]}


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
    components = list(head["components"])
    general = registry.with_role("general")
    nodes = _keras_model(options, head, general.name)
    keep = nodes[-1]
    trained = {general.name: keep}  # model name -> its trainer
    components += nodes
    samd = _samd(options, head, keep) if options.samd.enabled else None
    if samd:
        components += samd["components"]
        trained[registry.with_role("samd").name] = samd["trainer"]
    downstream = _downstream(options, head) if options.downstream.enabled else None
    if downstream:
        components += downstream["components"]
        trained[registry.with_role("downstream").name] = downstream["trainer"]
    for name in options.unified_models:
        nodes = _keras_model(options, head, name)
        trained[name] = nodes[-1]
        components += nodes
    evaluations, pushers = _evaluate_and_push(options, head, trained, downstream)
    components += [*evaluations.values(), *pushers]
    report = EvaluationReport(
        evaluations={name: node.outputs["evaluation"] for name, node in evaluations.items()},
        transfer_report=samd["trainer"].outputs["transfer_report"] if samd else None,
    )
    report.add_upstream_node(pushers[-1])  # the report says what was pushed
    components.append(report)

    return tfx.dsl.Pipeline(
        # KFP v2 names allow no underscore: the same pipeline is `keep-samd` there.
        pipeline_name=PIPELINE_NAME if local else PIPELINE_NAME.replace("_", "-"),
        pipeline_root=options.pipeline_root,
        components=components,
        enable_cache=options.cache,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(options.metadata_path) if local else None
        ),
        beam_pipeline_args=list(options.beam_pipeline_args),
    )


def _keras_model(options: PipelineOptions, head: Dict, name: str) -> List:
    """[its Tuner, when the options tune it, and] the Trainer of the registered Keras model `name`."""
    if name not in options.tuned_models:
        return [_keras_trainer(options, head, name)]
    tuner = tfx.components.Tuner(
        tuner_fn=TUNER_FN, **_keras_inputs(options, head, name),
        custom_config=options.keras_tuner_config(name).as_custom_config(),
    ).with_id(f"{registry.get(name).title}Tuner")
    return [tuner, _keras_trainer(options, head, name, hyperparameters=tuner.outputs["best_hyperparameters"])]


def _keras_inputs(options: PipelineOptions, head: Dict, name: str) -> Dict:
    """What a Keras model's Trainer and Tuner read: the transformed examples, fitted on `train`, early-stopped
    (or scored) on `validation`. Unified models train with their section's steps."""
    entry = registry.get(name)
    steps = options.train_steps_of(options.unified) if entry.role == "unified" else options.train_steps
    return dict(
        examples=head["transformed"],
        transform_graph=head["graph"],
        schema=head["schema"],
        train_args=tfx.proto.TrainArgs(splits=["train"], num_steps=steps),
        eval_args=tfx.proto.EvalArgs(splits=["validation"], num_steps=options.eval_steps),
    )


def _keras_trainer(options: PipelineOptions, head: Dict, name: str, node_id: Optional[str] = None,
                   model_name: Optional[str] = None, roles=None, hyperparameters=None):
    """The Trainer of the registered Keras model `name` (KEEP's or a unified one) on the transformed examples;
    with `roles`, on those scenarios' rows only; with `hyperparameters` (a Tuner's best), trained with them."""
    entry = registry.get(name)
    args = dict(
        run_fn=GENERIC_RUN_FN,
        **_keras_inputs(options, head, name),
        custom_config=options.keras_trainer_config(name, model_name, roles).as_custom_config(),
    )
    if hyperparameters is not None:
        args["hyperparameters"] = hyperparameters
    node_id = node_id or f"{entry.title}Trainer"
    if roles:  # the roles are read from the scenario table, an input artifact
        return ScenarioTrainer(scenario_table=head["scenarios"], **args).with_id(node_id)
    return tfx.components.Trainer(**args).with_id(node_id)


def _samd(options: PipelineOptions, head: Dict, keep) -> Dict:
    """ScenarioSimilarity -> SamdTrainer, distilling `keep` (or, with teacher "super", a super-scenario KEEP)."""
    components = []
    teacher = keep
    if options.samd.teacher == "super":  # SAMD's paper (4.1): the general model of the super scenario
        teacher = _keras_trainer(options, head, registry.with_role("general").name, "SamdTeacherTrainer",
                                 registry.SAMD_TEACHER, roles=["super"])
        components.append(teacher)
    similarity = ScenarioSimilarity(
        examples=head["examples"], scenario_table=head["scenarios"],
        alpha=options.similarity_alpha, top_g=SamdConfig.from_dict(options.samd.samd).top_g,
    )
    if head.get("gate") is not None:  # none when the head is imported
        similarity.add_upstream_node(head["gate"])
    trainer = SamdTrainer(
        examples=head["transformed"],
        transform_graph=head["graph"],
        teacher=teacher.outputs["model"],
        similarity=similarity.outputs["similarity"],
        scenario_table=head["scenarios"],
        train_steps=options.train_steps_of(options.samd),
        eval_steps=options.eval_steps,
        custom_config=options.samd_trainer_config().as_custom_config(),
    )
    return {"trainer": trainer, "components": components + [similarity, trainer]}


def _downstream(options: PipelineOptions, head: Dict) -> Dict:
    """KEEP stage two: KnowledgeCenter -> KnowledgePusher -> DownstreamTrainer."""
    knowledge_center = KnowledgeCenter(
        examples=head["transformed"], transform_graph=head["graph"], train_steps=options.knowledge_train_steps,
        custom_config=options.knowledge_center_config().as_custom_config())
    knowledge_pusher = KnowledgePusher(knowledge=knowledge_center.outputs["knowledge"],
                                       serving_dir=options.serving_dir)
    components = [knowledge_center, knowledge_pusher]
    base_model = None
    if options.downstream.spans:
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
    knowledge = knowledge_center.outputs["knowledge"] if options.downstream.plugged else None
    trainer = DownstreamTrainer(
        examples=head["transformed"], transform_graph=head["graph"],
        scenario_table=head["scenarios"], train_steps=options.train_steps_of(options.downstream),
        knowledge=knowledge, base_model=base_model,
        custom_config=options.downstream_trainer_config().as_custom_config(),
    ).with_id("DownstreamTrainer")
    trainer.add_upstream_node(knowledge_pusher)  # trained on a cache version that is served
    return {"trainer": trainer, "knowledge": knowledge, "pusher": knowledge_pusher,
            "components": components + [trainer]}


def _evaluate_and_push(options: PipelineOptions, head: Dict, trained: Dict, downstream):
    """({model: its ModelEvaluator}, [pushers]): evaluators, each after the baseline it must beat and the floor;
    then the pushers one after the other (one writer of models.config at a time), each pushing only a blessed model."""
    evaluations = {}
    for name in options.evaluation_order(list(trained)):
        node, entry = trained[name], registry.get(name)
        base, floor = options.blessing_baselines.get(name), options.blessing_floor(name)
        evaluations[name] = ModelEvaluator(
            examples=head["examples"], model=node.outputs["model"], model_name=name,
            scenario_table=head["scenarios"], serving_dir=options.serving_dir,
            blessing_config=options.blessing_config(name),
            baseline_evaluation=evaluations[base].outputs["evaluation"] if base else None,
            floor=options.blessing.floor,
            floor_evaluation=evaluations[floor].outputs["evaluation"] if floor else None,
            knowledge=downstream["knowledge"] if downstream and entry.role == "downstream" else None,
        ).with_id(f"{entry.title}Evaluator")
    pushers = [downstream["pusher"]] if downstream else []
    for name, node in trained.items():
        blessing, entry = evaluations[name].outputs["blessing"], registry.get(name)
        if entry.role == "samd":
            push = SamdPusher(model=node.outputs["model"], serving_dir=options.serving_dir, model_blessing=blessing)
        else:
            push = ServingPusher(
                model=node.outputs["model"], model_blessing=blessing,
                push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
                    base_directory=options.serving_model_dir(name)))).with_id(f"{entry.title}Pusher")
        if pushers:
            push.add_upstream_node(pushers[-1])
        pushers.append(push)
    return evaluations, pushers[1:] if downstream else pushers
