"""serving.profiler: TensorFlow's profiler client traces the server over its gRPC port."""

import glob
import os

import pytest
import tensorflow as tf

from serving import profiler
from serving.config import build_config
from serving.model_server import ModelServer
from tests.serving import make_base


def test_tensorflow_profiler_client_traces_the_server(tmp_path):
    base = make_base(str(tmp_path), {1: 0.0})
    server = ModelServer(build_config({"m": base}), port=0, rest_api_port=None, file_system_poll_wait_seconds=0,
                         version_settle_seconds=0).start()
    try:
        logdir = str(tmp_path / "logs")
        tf.profiler.experimental.client.trace(f"grpc://127.0.0.1:{server.port}", logdir, 300)
        traces = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
        assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    finally:
        server.stop()


def test_one_trace_at_a_time(tmp_path):
    request = profiler.ProfileRequest(duration_ms=1, repository_root=str(tmp_path), session_id="s", host_name="h")
    assert profiler._busy.acquire(blocking=False)
    try:
        with pytest.raises(RuntimeError, match="UNAVAILABLE: Another profiling session is active."):
            profiler.profile(request, sleep=lambda s: None)
    finally:
        profiler._busy.release()
    assert not profiler.profile(request, sleep=lambda s: None).empty_trace
    assert os.path.isfile(tmp_path / "s" / "h.xplane.pb")
