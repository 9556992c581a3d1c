"""Process-wide gRPC and TensorFlow settings, applied before either runtime starts.

Both are read once, when the runtime initialises, so only the CLI (a fresh process)
applies them; an in-process ModelServer keeps whatever its host process set up.

  * gRPC polling: grpcio's EventEngine listener/endpoints hand each read and write
    between two extra threads before the completion-queue thread sees it. The older
    path polls in the thread that waits on the queue, which saves a few tens of
    microseconds per Predict on few cores. Only on grpcio versions checked to have these experiments (an unknown name
    makes grpc log an error at startup; experiments come and go between releases).
  * TensorFlow threads: TF Serving's --tensorflow_intra_op_parallelism and
    --tensorflow_inter_op_parallelism (0: TensorFlow's choice), and thread spinning,
    off by default. TF's pool threads spin after each op waiting for more work; between
    requests there is none, so they only take the CPU from the request's gRPC threads
    and from each other, which shows on busy cores (docs/benchmarks.md, serving).
"""

import logging
import os
import sys
from importlib import metadata

log = logging.getLogger("serving")

_GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"
_GRPC_VERSIONS = {(1, 85)}  # checked: the experiments exist and are on by default


def prefer_queue_polling() -> bool:
    """Sets GRPC_EXPERIMENTS (unless the operator set it); False if grpc is already loaded."""
    if "grpc" in sys.modules or "GRPC_EXPERIMENTS" in os.environ:
        return False
    try:
        version = tuple(int(p) for p in metadata.version("grpcio").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    if version not in _GRPC_VERSIONS:
        return False
    os.environ["GRPC_EXPERIMENTS"] = _GRPC_EXPERIMENTS
    return True


def configure_tensorflow(intra_op: int = 0, inter_op: int = 0, spinning: bool = False) -> bool:
    """Thread pools and spinning for this process's TensorFlow; False (and nothing changed)
    once TF has run an op, as its pools are built then."""
    if not _before_eager_init(disable_spinning=not spinning):
        log.warning("TensorFlow already initialised: thread settings left as they are")
        return False
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    return True


def _before_eager_init(disable_spinning: bool) -> bool:
    """False once TF's eager context has built its thread pools; before that True, having turned
    thread spinning off in the ConfigProto they will be built from if `disable_spinning`.

    TF has no public API for either: this reads Context._initialized and rewrites
    Context._config (the base of Context.config, which initialisation reads). Checked
    against TensorFlow 2.16.2; tests/serving/test_model_server.py::
    test_runtime_settings_only_apply_before_the_runtimes_start fails if either stops working.
    """
    import tensorflow as tf
    from tensorflow.python.eager import context

    ctx = context.context()
    if getattr(ctx, "_initialized", True):
        return False
    if disable_spinning:
        config = tf.compat.v1.ConfigProto()
        if ctx._config is not None:  # noqa: SLF001
            config.CopyFrom(ctx._config)  # noqa: SLF001
        config.experimental.disable_thread_spinning = True
        ctx._config = config  # noqa: SLF001
    return True
