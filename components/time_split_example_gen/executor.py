"""Executor of TimeSplitExampleGen: CsvExampleGen's reading, partitioned by day instead of by hash."""

import json
import os
from typing import Any, Dict

import apache_beam as beam
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from components.time_split_example_gen.split import SPLITS, SplitError, TimeSplit, day_of_path

DAY_FEATURE = "day"


def _partition(example, num_partitions: int, rule: TimeSplit, bounds, where: str) -> int:
    feature = example.features.feature.get(DAY_FEATURE)
    if feature is None or not feature.int64_list.value:
        raise SplitError(f"{where}: a row without an integer `{DAY_FEATURE}`; the time split needs it")
    key = example.SerializeToString(deterministic=True) if not rule.validation_days else b""
    return rule.assign(int(feature.int64_list.value[0]), bounds, key)


class Executor(csv_executor.Executor):
    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]):
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        if len(input_config.splits) != 1:
            raise SplitError("TimeSplitExampleGen reads one input pattern and splits it by day")
        pattern = input_config.splits[0].pattern
        input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        where = os.path.join(input_base, pattern)
        files = fileio.glob(where)
        if not files:
            raise SplitError(f"{where}: no files")
        rule = TimeSplit.from_dict(json.loads(exec_properties.get("time_split") or "{}"))
        bounds = rule.boundaries((day_of_path(f) for f in files), where)
        exec_properties["_beam_pipeline_args"] = self._beam_pipeline_args or []
        parts = (pipeline
                 | "InputToRecord" >> self.GetInputSourceToExamplePTransform()(exec_properties, pattern)
                 | "SplitByDay" >> beam.Partition(_partition, len(SPLITS), rule, bounds, where))
        return dict(zip(SPLITS, parts))
