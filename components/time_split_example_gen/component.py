"""TimeSplitExampleGen: a CSV ExampleGen whose output splits are train / validation / test by day.

FileBasedExampleGen's driver and output contract; its executor reads with the raw
contract's types and shuffles in two bounded-memory passes (see executor.py).

The rule is `split.TimeSplit` (default: test = the last day, validation = the day
before, train = the rest). The output Examples artifact has the three splits, so
Transform (which fits its analyzers on `train` by default), the Trainers
(`eval_args.splits=["validation"]`) and the evaluators (`test`) read what they should.
"""

from typing import Mapping, Optional

from tfx import types as tfx_types
from tfx.components.example_gen import component as example_gen_component
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.keys import TIME_SPLIT_KEY
from components.time_split_example_gen import executor
from components.time_split_example_gen.split import SPLITS, TimeSplit


class TimeSplitExampleGenSpec(standard_component_specs.FileBasedExampleGenSpec):
    PARAMETERS = {**standard_component_specs.FileBasedExampleGenSpec.PARAMETERS,
                  TIME_SPLIT_KEY: ExecutionParameter(type=str),  # TimeSplit as JSON
                  standard_component_specs.SCHEMA_FILE_KEY: ExecutionParameter(type=str)}  # the raw columns' types


class TimeSplitExampleGen(example_gen_component.FileBasedExampleGen):
    SPEC_CLASS = TimeSplitExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, input_base: str, pattern: str, schema_file: str, time_split: Optional[Mapping] = None):
        rule = TimeSplit.from_dict(time_split)
        # ExampleGen requires positive hash buckets per output split; the executor splits by day, not by them.
        output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
            example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1) for name in SPLITS]))
        spec = TimeSplitExampleGenSpec(
            input_base=input_base,
            input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="all", pattern=pattern)]),
            output_config=output_config, custom_config=None, range_config=None,
            output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
            output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP,
            time_split=rule.to_json(), schema_file=schema_file,
            examples=tfx_types.Channel(type=standard_artifacts.Examples))
        base_component.BaseComponent.__init__(self, spec=spec)
