"""RawDataCheck: checks a raw data folder against the contract before ExampleGen reads it."""

from tfx.dsl.components.base import base_component, executor_spec
from tfx import types as tfx_types
from tfx.types import component_spec
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components import artifacts
from components.keys import DATA_ROOT_KEY, INPUT_FINGERPRINT_KEY, REPORT_KEY, SCENARIOS_KEY, SPANS_KEY
from components.raw_data_check import driver, executor


class RawDataCheckSpec(component_spec.ComponentSpec):
    PARAMETERS = {
        DATA_ROOT_KEY: ExecutionParameter(type=str),
        # JSON list of spans (day numbers) to check; all spans when absent.
        SPANS_KEY: ExecutionParameter(type=str, optional=True),
        # Set by the driver at run time (the data folder's files, sizes, times): the cache key.
        INPUT_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {}
    OUTPUTS = {REPORT_KEY: ChannelParameter(type=artifacts.RawDataReport),
               SCENARIOS_KEY: ChannelParameter(type=artifacts.ScenarioTable)}


class RawDataCheck(base_component.BaseComponent):
    """Fails the run with the file, line and problem when the raw data breaks the contract.

    Make ExampleGen depend on it (`example_gen.add_upstream_node(check)`), so nothing
    is read, let alone written, from a data set that would fail later. Its `scenarios`
    output is the validated scenario table, for every component that needs it.
    """

    SPEC_CLASS = RawDataCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    DRIVER_CLASS = driver.Driver  # the data folder's fingerprint, for TFX's cache

    def __init__(self, data_root: str, spans=None):
        import json

        super().__init__(
            spec=RawDataCheckSpec(
                data_root=data_root,
                spans=None if spans is None else json.dumps(list(spans)),
                report=tfx_types.Channel(type=artifacts.RawDataReport),
                scenarios=tfx_types.Channel(type=artifacts.ScenarioTable),
            )
        )
