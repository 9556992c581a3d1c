"""KnowledgeCenter's executor on a non-local filesystem: a versioned cache, its record and the artifact's properties."""

import json
import os

import pytest
from tfx.dsl.io import fileio
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import CUSTOM_CONFIG_KEY, EXAMPLES_KEY, TRANSFORM_GRAPH_KEY

from components.keys import KNOWLEDGE_KEY, TRAIN_STEPS_KEY
from components.knowledge_center.executor import Executor
from trainers import knowledge_center
from tests.components import artifact, ram_dir
from tests.trainers import custom_config

pytestmark = pytest.mark.slow  # a Transform run (the session's `transformed` fixture) and training


def test_executor_writes_a_versioned_cache_and_its_record(ram_transformed):
    examples = artifact(standard_artifacts.Examples, ram_transformed["examples"], ["train", "validation"])
    graph = artifact(standard_artifacts.TransformGraph, ram_transformed["graph"])
    out = artifact(standard_artifacts.Model, ram_dir("knowledge"))
    Executor().Do({EXAMPLES_KEY: [examples], TRANSFORM_GRAPH_KEY: [graph]}, {KNOWLEDGE_KEY: [out]},
                  {TRAIN_STEPS_KEY: 10, CUSTOM_CONFIG_KEY: json.dumps(custom_config(
                      "knowledge_center", knowledge={"strategy": "decomposition", "batch_size": 128}, epochs=1,
                      seed=3))})
    version = out.get_int_custom_property("knowledge_version")
    assert version > 1_600_000_000 and out.get_string_custom_property("strategy") == "decomposition"
    with fileio.open(os.path.join(out.uri, knowledge_center.CACHE_FILE)) as f:
        record = json.loads(f.read())
    assert record["version"] == version and record["width"] == out.get_int_custom_property("knowledge_width")
    assert fileio.exists(os.path.join(out.uri, "Format-Serving", "saved_model.pb"))
    assert knowledge_center.load_daily(out.uri)  # the per-day tables the downstream trainer reads back
