"""The gRPC front end: TF Serving's PredictionService and ModelService on the official stubs.

The request -> response functions are plain (no gRPC context) so the REST front end and
tests can share them; the servicers only turn ServingError into a gRPC status.
"""

import functools
import logging
from typing import Optional, Tuple

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

from serving.config import parse_config
from serving.errors import ServingError, invalid
from serving.servable import DEFAULT_SIGNATURE, request_inputs
from serving.versions import ModelRegistry

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
    outputs = servable.predict(signature, request_inputs(request), request.output_filter)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature
    for name, array in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(array))
    return response


def model_metadata(registry: ModelRegistry, request: get_model_metadata_pb2.GetModelMetadataRequest
                   ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    fields = list(request.metadata_field)
    if not fields:
        raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
    unsupported = [f for f in fields if f != SIGNATURE_DEF_FIELD]
    if unsupported:
        raise invalid(f"metadata_field {unsupported} not supported (only {SIGNATURE_DEF_FIELD!r})")
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


def reload_config(registry: ModelRegistry, request: model_management_pb2.ReloadConfigRequest
                  ) -> model_management_pb2.ReloadConfigResponse:
    specs = parse_config(request.config)
    registry.reload(specs)
    log.info("reloaded model config: %s", sorted(specs))
    return model_management_pb2.ReloadConfigResponse()  # status defaults to OK


def _grpc_method(fn):
    """Turns a ServingError into the gRPC status TF Serving would send."""

    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            return fn(self._registry, request)
        except ServingError as e:
            context.abort(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - one request's bug must not kill the server
            log.exception("%s failed", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__} failed: {type(e).__name__}: {e}")

    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify/Regress/MultiInference stay UNIMPLEMENTED."""

    def __init__(self, registry: ModelRegistry):
        self._registry = registry

    Predict = _grpc_method(predict)
    GetModelMetadata = _grpc_method(model_metadata)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, registry: ModelRegistry):
        self._registry = registry

    GetModelStatus = _grpc_method(model_status)
    HandleReloadConfigRequest = _grpc_method(reload_config)


def add_services(server: grpc.Server, registry: ModelRegistry) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(registry), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry), server)
