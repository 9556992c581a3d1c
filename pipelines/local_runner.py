"""Runs the keep_samd pipeline with TFX's LocalDagRunner.

    tfx pipeline create --pipeline_path=pipelines/local_runner.py --engine=local
    tfx run create --pipeline_name=keep_samd --engine=local

or directly `python pipelines/local_runner.py [--verbose]`. Options come from the
environment (see pipelines/options.py). The terminal shows the run console
(pipelines/console.py); everything else goes to <output>/logs/<run>.log, unless
--verbose or KEEP_SAMD_VERBOSE=1.
"""

import os
import sys
import time
import traceback
import warnings


def _undo_cli_quieting():
    """`make run` starts the tfx CLI with TF_CPP_MIN_LOG_LEVEL=3 and PYTHONWARNINGS=ignore, so that
    the CLI's own imports print nothing, and names them in KEEP_SAMD_CLI_QUIETED. The run the CLI
    starts (this process and its Beam workers) inherits them: take them back, so that what they
    would hide reaches the run's log (or, verbose, the terminal)."""
    names = os.environ.pop("KEEP_SAMD_CLI_QUIETED", "").split()
    for name in names:
        os.environ.pop(name, None)
    if "PYTHONWARNINGS" in names:
        warnings.filters[:] = [f for f in warnings.filters if tuple(f[:4]) != ("ignore", None, Warning, None)]


_undo_cli_quieting()
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Run as a script (how `tfx run create` runs it), this file's folder is sys.path[0]:
# put the repository root first so `pipelines`, `models`, ... resolve to this checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Only this light import up here: TensorFlow, TFX and Beam print on import (pipelines.options
# imports TFX), and that output belongs in the run's log.
from pipelines import console  # noqa: E402


def _user_error(exc):
    """The data or option error behind a failed run, if that is what failed it."""
    from components.raw_data_check import RawDataError
    from components.validation_gate import DataAnomalyError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (RawDataError, DataAnomalyError)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _compiling() -> bool:
    """True under `tfx pipeline create|update|compile`: the CLI runs this file with
    LocalDagRunner.run swapped for a stub that only records the pipeline
    (tfx/tools/cli/handler/dag_runner_patcher.py), so no run happens. TFX says so
    nowhere public: the stub is recognised by the functools.wraps mark the patcher
    leaves, checked against TFX 1.16.0 (tests/pipelines/test_console.py::
    test_pipeline_create_is_recognised_as_compiling_only fails if that changes)."""
    runner = sys.modules.get("tfx.orchestration.local.local_dag_runner")
    return runner is not None and getattr(runner.LocalDagRunner.run, "__wrapped__", None) is not None


def _options_error(exc) -> bool:
    options = sys.modules.get("pipelines.options")  # imported in main(); absent if that import failed
    return options is not None and isinstance(exc, options.OptionsError)


def main(argv=None) -> int:
    verbose = console.verbose_requested(argv)
    compiling = _compiling()
    log = None
    try:
        with console.quiet(verbose) as log:
            from absl import logging
            from tfx import v1 as tfx

            from pipelines.keep_samd import create_pipeline
            from pipelines.options import PipelineOptions

            options = PipelineOptions.from_env()
            stem = time.strftime("%Y%m%d-%H%M%S") + ("-compile" if compiling else "")
            log.open(os.path.join(options.output_dir, "logs"), stem)
            logging.set_verbosity(logging.INFO)
            pipeline = create_pipeline(options)
            if compiling:  # the CLI says the pipeline was created or updated
                tfx.orchestration.LocalDagRunner().run(pipeline)
                return 0
            run_id = os.path.basename(log.path)[:-len(".log")] if log.path else stem
            with console.RunConsole(log.terminal, log.path, run_id, options.metadata_path, options.output_dir,
                                    [c.id for c in pipeline.components]):
                tfx.orchestration.LocalDagRunner().run(pipeline)
    except Exception as e:  # noqa: BLE001 - reworded below or re-raised
        cause = e if _options_error(e) else _user_error(e)
        log_path = log.path if log is not None else None
        where = f" (log: {log_path})" if log_path else ""
        if cause is None:
            if not log_path:  # verbose, or no log yet: the traceback on the terminal
                raise
            with open(log_path, "a") as f:
                traceback.print_exc(file=f)
            summary = (str(e).strip().splitlines() or [""])[0][:300]
            print(f"\nkeep_samd: run failed: {type(e).__name__}: {summary}\n  traceback in {log_path}",
                  file=sys.stderr)
            return 1
        print(f"\nkeep_samd: {'pipeline not compiled' if compiling else 'run stopped'}: {cause}{where}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
