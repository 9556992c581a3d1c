"""The pipeline options: one typed configuration, checked once, documented by docs/options.md's table."""

import dataclasses
import json
import os
import re
import typing

import pytest

from pipelines.options import (OptionsError, PipelineOptions, SamdOptions, option_rows,
                               options_table)

OPTIONS_DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                           "options.md")

# The e2e test's environment (tests/pipelines/test_pipeline_e2e.py): the interface users have.
E2E_ENV = {
    "KEEP_SAMD_TRAIN_STEPS": "600", "KEEP_SAMD_EVAL_STEPS": "10", "KEEP_SAMD_EPOCHS": "3",
    "KEEP_SAMD_KEEP": json.dumps({"batch_size": 256}),
    "KEEP_SAMD_SAMD": json.dumps({"train_steps": 200, "epochs": 2, "samd": {"batch_size": 64}}),
    "KEEP_SAMD_UNIFIED": json.dumps({"train_steps": 150, "corrupt_labels": {"mmoe": "invert"}}),
    "KEEP_SAMD_BLESSING": json.dumps({"metric": "auc_click", "margin": 0.03, "models": {
        "samd": {"margin": -1.0}, "keep_downstream": {"tolerance": 1.0, "floor": False}}}),
    "KEEP_SAMD_DOWNSTREAM": json.dumps({"spans": 1, "train_steps": 150, "knowledge_train_steps": 150, "epochs": 2,
                                        "downstream": {"batch_size": 256}, "knowledge": {"batch_size": 256}}),
}


def _documented_table():
    text = open(OPTIONS_DOC, encoding="utf-8").read()
    start, end = text.index("<!-- options table"), text.index("<!-- end of the options table -->")
    return text[text.index("\n", start) + 1:end].strip()


def test_the_documented_options_table_is_the_generated_one():
    assert _documented_table() == options_table(), \
        "docs/options.md is stale: paste the output of python -m pipelines.options between its markers"


def _fields(cls, prefix=""):
    """{option name: field} of every option, sections' fields included."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f.metadata.get("env") or (f"{prefix}.{f.name}" if prefix else f.name)
        out[name] = f
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_fields(hints[f.name], name))
    return out


def test_the_docs_document_every_option_with_its_default():
    rows = {}
    for line in _documented_table().splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells
    fields = _fields(PipelineOptions)
    assert set(rows) == set(fields)
    for name, f in fields.items():
        _, _, default, meaning = rows[name]
        assert meaning, f"{name}: no meaning"
        if "shown" in f.metadata or dataclasses.is_dataclass(f.default):
            continue  # a default that is not a plain value (another option's, a path) or a section
        value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        assert json.loads(default.strip("`")) == json.loads(json.dumps(value)), name


def test_a_default_shown_in_words_names_the_one_place_it_comes_from():
    shown = {name: default for name, _, default, _ in option_rows()}
    assert shown["KEEP_SAMD_DOWNSTREAM.epochs"] == shown["KEEP_SAMD_SAMD.epochs"] == "`KEEP_SAMD_EPOCHS`"
    from components.model_evaluator.blessing import BlessingConfig
    assert shown["KEEP_SAMD_BLESSING.margin"] == f"`{BlessingConfig.margin}`"


def test_the_environment_interface_gives_typed_sections_and_the_trainers_their_configs():
    o = PipelineOptions.from_env(E2E_ENV)
    assert (o.train_steps, o.eval_steps, o.epochs, o.keep) == (600, 10, 3, {"batch_size": 256})
    assert o.samd == SamdOptions(train_steps=200, epochs=2, samd={"batch_size": 64})
    assert o.train_steps_of(o.samd) == 200 and o.train_steps_of(o.unified) == 150
    samd = o.samd_trainer_config()
    assert (samd.samd, samd.students, samd.epochs, samd.scenarios, samd.model_name) == (
        {"batch_size": 64}, {}, 2, None, "samd")
    # "epochs" of KEEP_SAMD_DOWNSTREAM sets both stage-two trainers', as it always did
    assert (o.epochs_of(o.downstream), o.knowledge_train_steps) == (2, 150)
    downstream = o.downstream_trainer_config()
    assert (downstream.plugged, downstream.downstream, downstream.spans, downstream.scenarios, downstream.epochs) == (
        True, {"batch_size": 256}, 1, None, 2)
    # every trainer gets the run's seed and patience; a unified model the equal budget's batch
    configs = [o.keras_trainer_config("keep_general"), o.keras_trainer_config("pepnet"), samd, downstream,
               o.knowledge_center_config()]
    assert {(c.seed, c.patience) for c in configs} == {(o.seed, o.patience)}
    assert configs[1].batch_size == o.unified.batch_size and configs[0].batch_size is None
    assert configs[0].config == o.keep and configs[0].model.name == "keep_general"
    assert o.blessing_config("samd") == {"metric": "auc_click", "margin": -1.0}
    assert o.blessing_config("pepnet") == {"metric": "auc_click", "margin": 0.03}
    assert o.blessing_floor("pepnet") == "logistic_regression" and o.blessing_floor("keep_downstream") is None
    assert o.unified.corrupt_labels == {"mmoe": "invert"}
    # the second e2e run: SAMD and the unified models off, their blessing entries still allowed
    second = PipelineOptions.from_env({**E2E_ENV, "KEEP_SAMD_SAMD": '{"enabled": false}',
                                       "KEEP_SAMD_UNIFIED": '{"models": []}'})
    assert second.trained_models == ("keep_general", "keep_downstream")
    assert PipelineOptions.from_env({"KEEP_SAMD_OUTPUT": "out"}).output_dir == os.path.abspath("out")
    assert PipelineOptions.from_env({"KEEP_SAMD_SPLIT": '{"validation_days": 0}'}).time_split.validation_days == 0


def test_every_trainer_has_one_epoch_cap_unless_its_section_sets_one():
    o = PipelineOptions()
    # one cap for every trainer unless a section sets its own
    configs = [o.samd_trainer_config(), o.downstream_trainer_config(), o.knowledge_center_config(),
               o.keras_trainer_config("adl"), o.keras_trainer_config("keep_general")]
    assert {c.epochs for c in configs} == {o.epochs} and o.epochs not in (3, 4)
    own = PipelineOptions(samd={"epochs": 4}, downstream={"epochs": 3})
    assert (own.samd_trainer_config().epochs, own.knowledge_center_config().epochs,
            own.downstream_trainer_config().epochs, own.keras_trainer_config("pepnet").epochs) == (4, 3, 3, o.epochs)


def test_sections_accept_dicts_and_replace_checks_again():
    o = PipelineOptions(samd={"teacher": "super"}, blessing={"margin": 0.0})
    assert o.samd.teacher == "super" and o.blessing.margin == 0.0
    assert dataclasses.replace(o, train_steps=7).samd is o.samd
    with pytest.raises(OptionsError, match="KEEP_SAMD_TRAIN_STEPS=0: expected at least 1"):
        dataclasses.replace(o, train_steps=0)


@pytest.mark.parametrize("env, message", [
    ({"KEEP_SAMD_SAMD": '{"teacher": "best"}'}, r"KEEP_SAMD_SAMD.teacher='best': expected one of \"general\", \"super\""),
    ({"KEEP_SAMD_SAMD": '{"techer": "super"}'}, r"unknown KEEP_SAMD_SAMD field\(s\): \['techer'\]; allowed: \[.*'teacher'"),
    ({"KEEP_SAMD_SAMD": '{"samd": {"clusters": 3}}'}, r"unknown KEEP_SAMD_SAMD.samd field\(s\): \['clusters'\]"),
    ({"KEEP_SAMD_SAMD": '{"samd": {"strategy": "x"}}'}, r"KEEP_SAMD_SAMD.samd: unknown SAMD strategy 'x'; one of"),
    ({"KEEP_SAMD_SAMD": '{"students": {"banner": {"hidden": [8]}}}'},
     r"unknown KEEP_SAMD_SAMD.students.banner field\(s\): \['hidden'\]"),
    ({"KEEP_SAMD_SAMD": '{"enabled": "no"}'}, r"KEEP_SAMD_SAMD.enabled='no': expected boolean"),
    ({"KEEP_SAMD_KEEP": '{"tower_units": [8, "x"]}'}, r"KEEP_SAMD_KEEP.tower_units\[1\]='x': expected integer"),
    ({"KEEP_SAMD_EPOCHS": "x"}, r"KEEP_SAMD_EPOCHS='x': expected integer"),
    ({"KEEP_SAMD_EVAL_STEPS": "0"}, r"KEEP_SAMD_EVAL_STEPS=0: expected at least 1"),
    ({"KEEP_SAMD_SPLIT": '{"test_day": 1}'}, r"unknown KEEP_SAMD_SPLIT field\(s\): \['test_day'\]"),
    ({"KEEP_SAMD_SPLIT": '{"test_days": 0}'}, r"KEEP_SAMD_SPLIT: .*test_days must be >= 1"),
    ({"KEEP_SAMD_SPLIT": "[1]"}, r"KEEP_SAMD_SPLIT='\[1\]': expected a JSON object"),
    ({"KEEP_SAMD_UNIFIED": '{"models": ["dcn"]}'}, r"KEEP_SAMD_UNIFIED.models: unknown model\(s\) \['dcn'\]; known:"),
    ({"KEEP_SAMD_UNIFIED": '{"configs": {"pepnet": {"gamma": "x"}}}'},
     r"KEEP_SAMD_UNIFIED.configs.pepnet.gamma='x': expected number"),
    ({"KEEP_SAMD_UNIFIED": '{"corrupt_labels": {"pepnet": "flip"}}'},
     r"corrupt_labels: 'pepnet': 'flip': expected .*\['invert', 'shuffle'\]"),
    ({"KEEP_SAMD_UNIFIED": '{"models": ["adl"], "corrupt_labels": {"pepnet": "invert"}}'},
     r"corrupt_labels: 'pepnet': 'invert': expected \{a trained unified model \['adl'\]"),
    ({"KEEP_SAMD_DOWNSTREAM": '{"spans": -1}'}, r"KEEP_SAMD_DOWNSTREAM.spans=-1: expected at least 0"),
    ({"KEEP_SAMD_TUNER": '{"max_trials": 0}'}, r"KEEP_SAMD_TUNER.max_trials=0: expected at least 1"),
    ({"KEEP_SAMD_TUNER": '{"enabled": "yes"}'}, r"KEEP_SAMD_TUNER.enabled='yes': expected boolean"),
    ({"KEEP_SAMD_TUNER": '{"models": ["samd"]}'}, r"KEEP_SAMD_TUNER.models: \['samd'\]: expected Keras models"),
    ({"KEEP_SAMD_DOWNSTREAM": '{"knowledge": {"strategy": "x"}}'},
     r"KEEP_SAMD_DOWNSTREAM.knowledge: strategy 'x': one of"),
    ({"KEEP_SAMD_BLESSING": '{"models": {"pepnte": {}}}'}, r"KEEP_SAMD_BLESSING.models: unknown model\(s\) \['pepnte'\]"),
    ({"KEEP_SAMD_BLESSING": '{"models": {"grec": {"margn": 0}}}'},
     r"unknown KEEP_SAMD_BLESSING.models.grec field\(s\): \['margn'\]; allowed: \['floor', 'margin', 'metric', "
     r"'tolerance'\]"),
    ({"KEEP_SAMD_BLESSING": '{"metric": "auc_ctr"}'}, r"KEEP_SAMD_BLESSING for every model: .*'auc_ctr': expected"),
    ({"KEEP_SAMD_BLESSING": '{"baselines": {"pepnet": "adl", "adl": "pepnet"}}'}, r"cycle"),
    ({"KEEP_SAMD_BLESSING": '{"baselines": {"samd": "keep_general"}}', "KEEP_SAMD_SAMD": '{"enabled": false}'},
     r"baselines: 'samd' -> 'keep_general': both must be trained"),
    ({"KEEP_SAMD_BLESSING": '{"floor": "logistic"}'},
     r"KEEP_SAMD_BLESSING.floor='logistic': expected null or a model trained on every scenario, one of \[.*'pepnet'"),
    ({"KEEP_SAMD_BLESSING": '{"floor": "samd"}'}, r"KEEP_SAMD_BLESSING.floor='samd': expected null or a model"),
    ({"KEEP_SAMD_BLESSING": '{"floor": 3}'}, r"KEEP_SAMD_BLESSING.floor=3: expected string or null"),
    ({"KEEP_SAMD_BLESSING": '{"baselines": {"logistic_regression": "pepnet"}}'},
     r"'logistic_regression' is the floor \(KEEP_SAMD_BLESSING.floor\), blessed on its own"),
])
def test_an_invalid_option_names_the_field_the_value_and_the_allowed_ones(env, message):
    with pytest.raises(OptionsError, match=message):
        PipelineOptions.from_env(env)


def test_the_floor_is_evaluated_before_every_other_model_when_trained():
    o = PipelineOptions(blessing={"baselines": {"pepnet": "shared_bottom"}})
    assert o.blessing.floor == "logistic_regression" and o.blessing_floor("pepnet") == "logistic_regression"
    assert o.blessing_floor("logistic_regression") is None  # the floor is compared with nothing
    order = o.evaluation_order(o.trained_models)
    assert order[0] == "logistic_regression" and order.index("shared_bottom") < order.index("pepnet")
    assert sorted(order) == sorted(o.trained_models)
    # Not trained in the run, or off (for every model, or for one): nothing is compared with it.
    assert PipelineOptions(unified={"models": ["pepnet"]}).blessing_floor("pepnet") is None
    assert PipelineOptions(blessing={"floor": None}).blessing_floor("pepnet") is None
    one_off = PipelineOptions(blessing={"models": {"samd": {"floor": False}}})
    assert one_off.blessing_floor("samd") is None and one_off.blessing_floor("pepnet") == "logistic_regression"
    assert one_off.evaluation_order(("samd", "logistic_regression")) == ("samd", "logistic_regression")
    assert PipelineOptions(blessing={"floor": "keep_general"}).evaluation_order(("samd", "keep_general")) == (
        "keep_general", "samd")


def test_the_pipeline_passes_each_trainer_its_epochs_and_steps(tmp_path):
    from pipelines.keep_samd import create_pipeline

    data = tmp_path / "data"
    data.mkdir()

    def components(**options):
        return create_pipeline(PipelineOptions(output_dir=str(tmp_path / "runs"), data_root=str(data),
                                               **options)).components

    def custom(**options):
        configs = {c.id: json.loads(c.exec_properties.get("custom_config") or "null") for c in components(**options)}
        return {node: config for node, config in configs.items() if config}  # the trainers

    epochs = {node: config["epochs"] for node, config in custom().items()}
    cap = PipelineOptions().epochs
    assert epochs == {"KeepTrainer": cap, "SamdTrainer": cap, "KnowledgeCenter": cap, "DownstreamTrainer": cap,
                      **{f"{''.join(p.capitalize() for p in m.split('_'))}Trainer": cap
                         for m in PipelineOptions().unified_models}}
    configs = custom(epochs=4, samd={"epochs": 3, "teacher": "super"}, downstream={"epochs": 1})
    assert {n: c["epochs"] for n, c in configs.items() if n in ("KeepTrainer", "SamdTeacherTrainer", "PepnetTrainer",
                                                              "SamdTrainer", "KnowledgeCenter", "DownstreamTrainer")} \
        == {"KeepTrainer": 4, "SamdTeacherTrainer": 4, "PepnetTrainer": 4, "SamdTrainer": 3, "KnowledgeCenter": 1,
            "DownstreamTrainer": 1}
    steps = {c.id: c.exec_properties.get("train_steps")
             for c in components(samd={"train_steps": 200}, downstream={"train_steps": 150})}
    assert (steps["SamdTrainer"], steps["KnowledgeCenter"], steps["DownstreamTrainer"]) == (200, 150, 150)


def test_the_tuner_is_off_by_default_and_refuses_a_model_without_a_search_space():
    from models import registry
    from trainers.config import KerasTunerConfig

    assert PipelineOptions().tuned_models == ()
    options = PipelineOptions.from_env({"KEEP_SAMD_TUNER": '{"enabled": true, "max_trials": 4}',
                                        "KEEP_SAMD_UNIFIED": '{"models": ["adl"], "configs": {"adl": {"dropout": 0.1}}}'})
    assert options.tuned_models == ("keep_general", "adl")
    config = options.keras_tuner_config("adl")
    assert isinstance(config, KerasTunerConfig)
    tuned = config.as_custom_config()  # the Trainer's config, and the trials
    assert tuned.pop("max_trials") == 4 and tuned == options.keras_trainer_config("adl").as_custom_config()
    registry.register(registry.ModelEntry("toy", "unified", "tests.pipelines.test_model_registry.ToyModel",
                                          "tests.pipelines.test_model_registry.ToyConfig"))
    try:
        with pytest.raises(OptionsError, match="KEEP_SAMD_TUNER: model 'toy' declares no SEARCH_SPACE"):
            PipelineOptions(tuner={"enabled": True})
        assert PipelineOptions(tuner={"enabled": True, "models": ["adl"]}).tuned_models == ("adl",)
    finally:
        registry.unregister("toy")
