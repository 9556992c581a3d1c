"""ServingPusher: TFX's Pusher, whose executor pushes atomically and rewrites models.config."""

from tfx import v1 as tfx
from tfx.dsl.components.base import executor_spec

from components.serving_pusher import executor


class ServingPusher(tfx.components.Pusher):
    """tfx.components.Pusher (same inputs, outputs and arguments) with executor.Executor.

    A subclass rather than Pusher(custom_executor_spec=...), which TFX deprecates.
    """

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
