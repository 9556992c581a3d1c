"""Executor of ScenarioSimilarity: runs `beam_pipeline` over every split of the examples.

A BaseBeamExecutor, so `tfx_internals.beam_pipeline` carries the pipeline's
beam_pipeline_args (runner, direct_running_mode, workers) into the run.
"""

import json
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import EXAMPLES_KEY

from components import tfx_internals
from components.keys import ALPHA_KEY, SCENARIO_TABLE_KEY, SIMILARITY_KEY, TOP_G_KEY
from components.scenario_similarity import beam_pipeline
from schemas.scenarios import read_scenario_table


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        # Equation 3 is fitted like any statistic: on the train split only (a time split's later
        # days must not shape what the students are trained with).
        paths = []
        if "train" in artifact_utils.decode_split_names(examples.split_names):
            paths = fileio.glob(os.path.join(artifact_utils.get_split_uri([examples], "train"), "*"))
        if not paths:
            raise beam_pipeline.SimilarityDataError(
                f"{examples.uri}: no example files in a train split (splits: {examples.split_names})")
        scenarios = list(read_scenario_table(artifact_utils.get_single_uri(input_dict[SCENARIO_TABLE_KEY])))
        alpha, g = float(exec_properties[ALPHA_KEY]), int(exec_properties[TOP_G_KEY])

        out_artifact = artifact_utils.get_single_instance(output_dict[SIMILARITY_KEY])
        with tfx_internals.beam_pipeline(self) as p:
            beam_pipeline.build(p, "examples", paths, scenarios, alpha, g, out_artifact.uri)

        with fileio.open(os.path.join(out_artifact.uri, beam_pipeline.JSON_NAME)) as f:
            doc = json.loads(f.read())
        out_artifact.set_int_custom_property("users", doc["users"])
        out_artifact.set_int_custom_property("scenario_sets", doc["scenario_sets"])
        logging.info("scenario similarity: %d users in %d scenario sets over %d scenarios; top-%d: %s",
                     doc["users"], doc["scenario_sets"], len(scenarios), g, doc["top_g"])
