"""The gRPC front end: TF Serving's PredictionService and ModelService on the official stubs.

The request -> response functions are plain (no gRPC context) so the REST front end and
tests can share them; the servicers only turn ServingError into a gRPC status.
"""

import functools
import logging
import os
from typing import Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2, inference_pb2,
                                     model_management_pb2, model_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from serving import inference, profiler
from serving.config import parse_config
from serving.errors import ServingError, invalid
from serving.servable import DEFAULT_SIGNATURE, request_examples, request_inputs
from serving.versions import ModelRegistry, not_available

log = logging.getLogger("serving")

SIGNATURE_DEF_FIELD = "signature_def"


def version_choice(model_spec) -> Tuple[Optional[int], Optional[str]]:
    which = model_spec.WhichOneof("version_choice")
    if which == "version":
        return model_spec.version.value, None
    if which == "version_label":
        return None, model_spec.version_label
    return None, None


def predict(registry: ModelRegistry, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    version, label = version_choice(request.model_spec)
    servable = registry.resolve(request.model_spec.name, version, label)
    signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
    response = predict_pb2.PredictResponse()
    # Counted from the protos' shapes, before conversion makes the request big.
    with registry.budget.hold(request_examples(request)):
        outputs = servable.predict(signature, request_inputs(request), request.output_filter)
        for name, array in outputs.items():
            fill_tensor_proto(response.outputs[name], array)
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature
    return response


def _tf_example_api(registry: ModelRegistry, spec, request, run):
    """Classify, Regress or MultiInference (`run`) on the model `spec` names, its examples held against the
    in-flight budget and counted (util.cc RecordRequestExampleCount)."""
    version, label = version_choice(spec)
    servable = registry.resolve(spec.name, version, label)
    n = inference.count_examples(request.input)
    with registry.budget.hold(n):
        response = run(servable, request)
    registry.metrics.examples(servable.model_name, n)
    return response


def classify(registry: ModelRegistry, request: classification_pb2.ClassificationRequest
             ) -> classification_pb2.ClassificationResponse:
    return _tf_example_api(registry, request.model_spec, request, inference.classify)


def regress(registry: ModelRegistry, request: regression_pb2.RegressionRequest) -> regression_pb2.RegressionResponse:
    return _tf_example_api(registry, request.model_spec, request, inference.regress)


def multi_inference(registry: ModelRegistry, request: inference_pb2.MultiInferenceRequest
                    ) -> inference_pb2.MultiInferenceResponse:
    # multi_inference_helper.cc: the model is the first task's (each task must name the same one).
    spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
    return _tf_example_api(registry, spec, request, inference.multi_inference)


# TensorProto's typed field for each dtype, as tensorflow's Tensor::AsProtoField fills it.
_FIELDS = {np.dtype(np.float32): "float_val", np.dtype(np.float64): "double_val",
           np.dtype(np.int8): "int_val", np.dtype(np.uint8): "int_val", np.dtype(np.int16): "int_val",
           np.dtype(np.uint16): "int_val", np.dtype(np.int32): "int_val", np.dtype(np.int64): "int64_val",
           np.dtype(np.uint32): "uint32_val", np.dtype(np.uint64): "uint64_val", np.dtype(np.bool_): "bool_val"}
# float_val (5) and double_val (6) are packed fixed-width: their wire bytes are the array's little-endian
# bytes, merged in one call rather than appended value by value from Python.
_PACKED = {np.dtype(np.float32): (b"\x2a", "<f4"), np.dtype(np.float64): (b"\x32", "<f8")}
_ENUMS = {d: tf.as_dtype(d).as_datatype_enum for d in _FIELDS}  # tf.as_dtype per output is Python-heavy


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def fill_tensor_proto(proto, array: np.ndarray) -> None:
    """Writes `array` into a response TensorProto in place, in the typed field (float_val, int64_val,
    string_val...) as TF Serving's Predict does (predict_util.cc: Tensor::AsProtoField), not in
    tensor_content: clients read `outputs['y'].float_val`."""
    if array.dtype == np.float16:  # half_val holds each value's bits
        proto.dtype = tf.float16.as_datatype_enum
        proto.half_val.extend(array.view(np.uint16).ravel().tolist())
    elif array.dtype in _FIELDS:
        proto.dtype = _ENUMS[array.dtype]
        packed = _PACKED.get(array.dtype)
        if packed:
            raw = np.ascontiguousarray(array, dtype=packed[1]).tobytes()
            proto.MergeFromString(packed[0] + _varint(len(raw)) + raw)
        else:
            getattr(proto, _FIELDS[array.dtype]).extend(array.ravel().tolist())
    else:  # strings (string_val) and the rest: TensorFlow's own conversion
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    for d in array.shape:
        proto.tensor_shape.dim.add().size = d


def model_metadata(registry: ModelRegistry, request: get_model_metadata_pb2.GetModelMetadataRequest
                   ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if not fields:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
    if unsupported:  # get_model_metadata_impl.cc's text
        raise invalid(f"Metadata field {unsupported[0]} is not supported")
    version, label = version_choice(request.model_spec)
    servable = registry.resolve(request.model_spec.name, version, label)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
    return response


def model_status(registry: ModelRegistry, request: get_model_status_pb2.GetModelStatusRequest
                 ) -> get_model_status_pb2.GetModelStatusResponse:
    version, label = version_choice(request.model_spec)
    model = registry.model(request.model_spec.name)
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.extend(model.status(version, label))
    return response


def check_base_path(base_path: str, prefix: str = "") -> None:
    """What a reload may point at: an existing absolute folder, inside `prefix` when set.

    The reload RPC loads whatever SavedModel it is given, and a SavedModel is code; an
    operator confines it with --model_base_path_prefix or closes it with
    --enable_reload_config_request=false.
    """
    if not os.path.isabs(base_path):
        raise invalid(f"base_path {base_path!r} must be an absolute path")
    if not os.path.isdir(base_path):
        raise invalid(f"base_path {base_path!r} does not exist or is not a directory")
    if prefix:
        real, root = os.path.realpath(base_path), os.path.realpath(prefix)
        if os.path.commonpath([real, root]) != root:
            raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                               f"base_path {base_path!r} is outside --model_base_path_prefix={prefix}")


def reload_config(registry: ModelRegistry, request: model_management_pb2.ReloadConfigRequest
                  ) -> model_management_pb2.ReloadConfigResponse:
    if not registry.allow_reload:
        raise ServingError(grpc.StatusCode.PERMISSION_DENIED,
                           "HandleReloadConfigRequest is disabled on this server "
                           "(--enable_reload_config_request=false)")
    specs = parse_config(request.config)
    for spec in specs.values():
        check_base_path(spec.base_path, registry.base_path_prefix)
    registry.reload(specs)
    log.info("reloaded model config: %s", sorted(specs))
    failed = registry.unavailable(specs)
    if failed:
        raise not_available(failed)
    return model_management_pb2.ReloadConfigResponse()  # status defaults to OK


def request_model(request) -> str:
    """The model a PredictionService request names (MultiInference: its first task's)."""
    if isinstance(request, inference_pb2.MultiInferenceRequest):
        return request.tasks[0].model_spec.name if request.tasks else ""
    return request.model_spec.name


def _grpc_method(fn, api: Optional[str] = None):
    """Turns a ServingError into the gRPC status TF Serving would send; an `api` request is counted and
    timed in the server's metrics (serving/metrics.py)."""

    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            if api is None:
                return fn(self._registry, request)
            with self._registry.metrics.request(request_model(request), api, "GRPC"):
                return fn(self._registry, request)
        except ServingError as e:
            context.abort(e.code, e.message)
        except RecursionError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{fn.__name__}: the request nests too deeply")
        except Exception as e:  # noqa: BLE001 - one request's bug must not kill the server
            # One line: the client gets the text; a traceback per request floods the log.
            log.error("%s failed: %s: %s", fn.__name__, type(e).__name__, e)
            context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__} failed: {type(e).__name__}: {e}")

    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self._registry = registry

    Predict = _grpc_method(predict, "Predict")
    Classify = _grpc_method(classify, "Classify")
    Regress = _grpc_method(regress, "Regress")
    MultiInference = _grpc_method(multi_inference, "MultiInference")
    GetModelMetadata = _grpc_method(model_metadata)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self._registry = registry

    GetModelStatus = _grpc_method(model_status)
    HandleReloadConfigRequest = _grpc_method(reload_config)


def add_services(server: grpc.Server, registry: ModelRegistry) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(registry), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry), server)
    server.add_generic_rpc_handlers((profiler.handler(),))  # as tensorflow_model_server, on the same port
