"""The protected TFX executor methods the Beam executors need, each behind one function.

TFX gives an executor subclass no public way to either: its Beam pipeline (the
pipeline's beam_pipeline_args plus the dependency flags BaseBeamExecutor adds) and
its execution's temporary folder (under the pipeline root, so on shared storage on a
cluster, unlike tempfile's). Checked against TFX 1.16.0;
tests/components/test_tfx_internals.py fails if either stops working.
"""

from tfx.dsl.components.base import base_beam_executor, base_executor


def beam_pipeline(executor: base_beam_executor.BaseBeamExecutor):
    """A new Beam pipeline with `executor`'s beam_pipeline_args (checked against TFX 1.16.0)."""
    return executor._make_beam_pipeline()  # noqa: SLF001


def tmp_dir(executor: base_executor.BaseExecutor) -> str:
    """`executor`'s temporary folder for this execution, created if missing (checked against TFX 1.16.0)."""
    return executor._get_tmp_dir()  # noqa: SLF001
