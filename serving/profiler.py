"""TensorFlow's ProfilerService on the server's gRPC port, as tensorflow_model_server registers it.

`tf.profiler.experimental.client.trace(grpc_address, logdir, duration_ms)` (and
TensorBoard's "capture profile") call `tensorflow.ProfilerService/Profile`: the server
traces itself for `duration_ms` and writes the trace where the request says, as TSL's
profiler_service_impl.cc does: `<repository_root>/<session_id>/<host_name>.xplane.pb`,
answering `empty_trace` false when it wrote one. The trace is TensorFlow's own profiler
session (`tf.profiler.experimental`), one at a time; a second request meanwhile gets
UNAVAILABLE.
"""

import glob
import logging
import os
import shutil
import tempfile
import threading
import time

import grpc
import tensorflow as tf

from serving.protos import F, message_classes

log = logging.getLogger("serving")

SERVICE = "tensorflow.ProfilerService"
# tsl/profiler/protobuf/profiler_service.proto: the fields used here, with their numbers.
_MESSAGES = message_classes("tsl/profiler/protobuf/profiler_service.proto", "tensorflow", [
    ("ProfileRequest", [("duration_ms", 1, F.TYPE_UINT64, ""), ("repository_root", 5, F.TYPE_STRING, ""),
                        ("session_id", 6, F.TYPE_STRING, ""), ("host_name", 7, F.TYPE_STRING, "")]),
    ("ProfileResponse", [("empty_trace", 7, F.TYPE_BOOL, "")]),
])
ProfileRequest, ProfileResponse = _MESSAGES["ProfileRequest"], _MESSAGES["ProfileResponse"]
MAX_DURATION_MS = 10 * 60 * 1000  # a trace holds the server's profiler: not for longer than this

_busy = threading.Lock()


def profile(request, context=None, sleep=time.sleep):
    """One Profile call: trace for duration_ms, write the XSpace into the request's repository."""
    if not request.repository_root:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "ProfileRequest.repository_root is empty")
    if request.duration_ms > MAX_DURATION_MS:
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
               f"duration_ms {request.duration_ms} is over {MAX_DURATION_MS}")
    if not _busy.acquire(blocking=False):
        _abort(context, grpc.StatusCode.UNAVAILABLE, "Another profiling session is active.")
    response = ProfileResponse(empty_trace=True)
    scratch = tempfile.mkdtemp(prefix="profile-")
    try:
        tf.profiler.experimental.start(scratch)
        try:
            sleep(request.duration_ms / 1000)
        finally:
            tf.profiler.experimental.stop()
        traces = glob.glob(os.path.join(scratch, "plugins", "profile", "*", "*.xplane.pb"))
        if traces:
            folder = os.path.join(request.repository_root, request.session_id)
            os.makedirs(folder, exist_ok=True)
            name = f"{request.host_name or os.uname().nodename}.xplane.pb"
            shutil.copyfile(traces[0], os.path.join(folder, name))
            response.empty_trace = os.path.getsize(traces[0]) == 0
            log.info("profiled %d ms into %s", request.duration_ms, os.path.join(folder, name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _busy.release()
    return response


def _abort(context, code, message):
    if context is None:
        raise RuntimeError(f"{code.name}: {message}")
    context.abort(code, message)


def handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Profile": grpc.unary_unary_rpc_method_handler(
            profile, request_deserializer=ProfileRequest.FromString,
            response_serializer=ProfileResponse.SerializeToString)})
