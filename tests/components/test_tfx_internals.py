"""components.tfx_internals: the protected TFX executor methods still do what the executors rely on."""

import os

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions
from tfx.dsl.components.base import base_beam_executor

from components import tfx_internals


class _Beam(base_beam_executor.BaseBeamExecutor):
    def Do(self, input_dict, output_dict, exec_properties):
        pass


def test_beam_pipeline_carries_the_beam_pipeline_args(tmp_path):
    executor = _Beam(_Beam.Context(beam_pipeline_args=["--direct_running_mode=multi_threading",
                                                       "--direct_num_workers=3"]))
    out = str(tmp_path / "out")
    with tfx_internals.beam_pipeline(executor) as p:
        assert p.options.view_as(DirectOptions).direct_num_workers == 3
        _ = p | beam.Create(["a", "b"]) | beam.io.WriteToText(out, shard_name_template="")
    with open(out) as f:
        assert sorted(f.read().split()) == ["a", "b"]


def test_tmp_dir_is_the_executions_own_and_exists(tmp_path):
    first = tfx_internals.tmp_dir(_Beam(_Beam.Context(tmp_dir=str(tmp_path), unique_id="7")))
    second = tfx_internals.tmp_dir(_Beam(_Beam.Context(tmp_dir=str(tmp_path), unique_id="8")))
    assert os.path.isdir(first) and os.path.isdir(second) and first != second
    assert os.path.commonpath([first, second]) == str(tmp_path)
