"""Runs the keep_samd pipeline with TFX's LocalDagRunner.

    tfx pipeline create --pipeline_path=pipelines/local_runner.py --engine=local
    tfx run create --pipeline_name=keep_samd --engine=local

or directly `python pipelines/local_runner.py`. Options come from the environment
(see pipelines/options.py).
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Run as a script (how `tfx run create` runs it), this file's folder is sys.path[0]:
# put the repository root first so `pipelines`, `models`, ... resolve to this checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from pipelines.keep_samd import create_pipeline  # noqa: E402
from pipelines.options import OptionsError, PipelineOptions  # noqa: E402


from components.raw_data_check import RawDataError  # noqa: E402
from components.validation_gate import DataAnomalyError  # noqa: E402

def _user_error(exc):
    """The data or option error behind a failed run, if that is what failed it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (RawDataError, DataAnomalyError)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def main() -> int:
    logging.set_verbosity(logging.INFO)
    try:
        options = PipelineOptions.from_env()
        tfx.orchestration.LocalDagRunner().run(create_pipeline(options))
    except Exception as e:  # noqa: BLE001 - reworded below or re-raised
        cause = _user_error(e) or (e if isinstance(e, OptionsError) else None)
        if cause is None:
            raise
        print(f"\nkeep_samd: run stopped: {cause}", file=sys.stderr)
        return 1
    print(f"\nkeep_samd: run finished; models pushed under {options.serving_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
