"""ScenarioSimilarity: SAMD's implicit scenario similarity (Section 4.2.2, Equation 3) from ExampleGen's output.

Reads every split of the examples once on Beam (the pipeline's beam_pipeline_args
apply), counts users per visited-scenario set and writes the exact Equation 3 matrix
with each scenario's top-G most similar others (the input of Equation 4).
"""

from tfx import types as tfx_types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import artifact, component_spec, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.standard_component_specs import EXAMPLES_KEY

from components import artifacts
from components.keys import ALPHA_KEY, SCENARIO_TABLE_KEY, SIMILARITY_KEY, TOP_G_KEY
from components.scenario_similarity import executor


class ScenarioSimilarityArtifact(artifact.Artifact):
    """similarity.json (scenarios, alpha, matrix, top_g, users, scenario_sets) and similarity.npz."""

    TYPE_NAME = "keep_samd.ScenarioSimilarity"  # KFP v2 wants <namespace>.<Name>


class ScenarioSimilaritySpec(component_spec.ComponentSpec):
    PARAMETERS = {
        ALPHA_KEY: ExecutionParameter(type=float),
        TOP_G_KEY: ExecutionParameter(type=int),
    }
    INPUTS = {EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
              # The scenario list and the matrix's row order.
              SCENARIO_TABLE_KEY: ChannelParameter(type=artifacts.ScenarioTable)}
    OUTPUTS = {SIMILARITY_KEY: ChannelParameter(type=ScenarioSimilarityArtifact)}


class ScenarioSimilarity(base_component.BaseComponent):
    """Equation 3 over the train split of `examples` (tf.Examples with `user_id`, `scenario_id` bytes features).

    Args:
      examples: CsvExampleGen's `examples` channel.
      scenario_table: RawDataCheck's `scenarios`: the scenarios and their order.
      alpha: the smoothing coefficient of Equation 3. The paper does not give its value;
        1.0 is a default of ours (alpha only has to keep alpha + |S_u ∩ S_v| positive).
      top_g: G, how many most similar other scenarios to list per scenario; the paper
        uses 2 on AliExpress (5 scenarios) and 10 on Alipay Ad.
    """

    SPEC_CLASS = ScenarioSimilaritySpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, examples, scenario_table, alpha: float = 1.0, top_g: int = 2):
        super().__init__(
            spec=ScenarioSimilaritySpec(
                examples=examples,
                scenario_table=scenario_table,
                alpha=float(alpha),
                top_g=int(top_g),
                similarity=tfx_types.Channel(type=ScenarioSimilarityArtifact),
            )
        )
