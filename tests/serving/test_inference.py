"""serving.inference: Classify, Regress and MultiInference as TF Serving answers them, on TF Serving's
half-plus-two test model rebuilt here (TF2 and TF1 style, in a zero-padded version folder)."""

import json
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, inference_pb2, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from serving.config import build_config
from serving.model_server import ModelServer
from tests.serving import half_plus_two

STYLES = ("tf2", "tf1")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    bases = {}
    for style in STYLES:
        half_plus_two(str(root / style), tf1=style == "tf1")
        bases[style] = str(root / style)
    server = ModelServer(build_config(bases), port=0, rest_api_port=0, file_system_poll_wait_seconds=0,
                         version_settle_seconds=0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def rest(server, path, body):
    request = urllib.request.Request(f"http://127.0.0.1:{server.rest_port}{path}", data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _examples(request_input, xs):
    for x in xs:
        request_input.example_list.examples.add().features.feature["x"].float_list.value.append(x)


@pytest.mark.parametrize("style", STYLES)
def test_classify_and_regress_answer_with_the_model_spec(stub, style):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = style, "classify_x_to_y"
    _examples(request.input, [2.0, 4.0])
    response = stub.Classify(request, timeout=30)
    assert [[c.score for c in row.classes] for row in response.result.classifications] == [[3.0], [4.0]]
    assert [[c.label for c in row.classes] for row in response.result.classifications] == [[""], [""]]
    # util.cc MakeModelSpec: the name, the version (from the folder 00000123), the signature.
    assert (response.model_spec.name, response.model_spec.version.value,
            response.model_spec.signature_name) == (style, 123, "classify_x_to_y")

    request = regression_pb2.RegressionRequest()
    request.model_spec.name, request.model_spec.signature_name = style, "regress_x_to_y"
    _examples(request.input, [2.0, 6.0])
    response = stub.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0, 5.0]


@pytest.mark.parametrize("style", STYLES)
def test_multi_inference_runs_each_task_on_the_same_rows(stub, style):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = request.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = style, signature
        task.method_name = f"tensorflow/serving/{method}"
    _examples(request.input, [2.0])
    response = stub.MultiInference(request, timeout=30)
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert [r.model_spec.signature_name for r in response.results] == ["regress_x_to_y", "classify_x_to_y"]


def test_classes_and_scores_pair_up_and_a_context_joins_every_example(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "tf2", "classify_labels"
    # util.cc: each row is the context's bytes then the example's, parsed as one merged tf.Example.
    request.input.example_list_with_context.context.features.feature["x"].float_list.value.append(4.0)
    request.input.example_list_with_context.examples.add()
    request.input.example_list_with_context.examples.add().features.feature["x"].float_list.value.append(6.0)
    response = stub.Classify(request, timeout=30)
    got = [[(c.label, round(c.score, 5)) for c in row.classes] for row in response.result.classifications]
    assert got == [[("lo", 0.6), ("hi", 0.4)], [("lo", 0.5), ("hi", 0.5)]]


def _code_and_details(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code(), info.value.details()


def test_bad_requests_get_tf_serving_codes_and_texts(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "tf2", "nope"
    _examples(request.input, [1.0])
    assert _code_and_details(stub.Classify, request) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                         "No signature was found with the name: nope")
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.Clear()
    assert _code_and_details(stub.Classify, request) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")
    # A predict signature whose input is not `inputs` cannot classify (classifier.cc).
    request.model_spec.signature_name = ""
    _examples(request.input, [1.0])
    code, details = _code_and_details(stub.Classify, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("No classification inputs found")
    # A classify signature has no `outputs` to regress with.
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name, regress.model_spec.signature_name = "tf2", "classify_x_to_y"
    _examples(regress.input, [1.0])
    code, details = _code_and_details(stub.Regress, regress)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("No regression outputs found")

    multi = inference_pb2.MultiInferenceRequest()
    for signature, model in (("regress_x_to_y", "tf2"), ("regress_x_to_y", "tf2")):
        task = multi.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = model, signature
        task.method_name = "tensorflow/serving/regress"
    _examples(multi.input, [1.0])
    assert _code_and_details(stub.MultiInference, multi) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Duplicate evaluation of signature: regress_x_to_y")
    multi.tasks[1].model_spec.name = "tf1"
    assert _code_and_details(stub.MultiInference, multi) == (
        grpc.StatusCode.INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    multi.tasks[1].model_spec.name, multi.tasks[1].model_spec.signature_name = "tf2", "classify_x_to_y"
    multi.tasks[1].method_name = "tensorflow/serving/predict"
    assert _code_and_details(stub.MultiInference, multi) == (
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")


@pytest.mark.parametrize("style", STYLES)
def test_predict_feeds_an_input_of_another_shape_as_tf_serving_does(stub, style):
    # Declared (None, 1), sent [3]: TF Serving feeds it and the graph answers elementwise.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = style
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0, 5.0], np.float32)))
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    assert [d.size for d in response.outputs["y"].tensor_shape.dim] == [3]


@pytest.mark.parametrize("style", STYLES)
def test_rest_classify_and_regress_in_tf_serving_json(server, style):
    # http_rest_api_handler.cc and json_tensor.cc: {"examples": [...]} in, {"results": ...} out.
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": [4.0]}]}
    assert rest(server, f"/v1/models/{style}:classify", body) == (200, {"results": [[["", 3.0]], [["", 4.0]]]})
    body = {"signature_name": "regress_x_to_y", "context": {"x": 6.0}, "examples": [{}]}
    assert rest(server, f"/v1/models/{style}/versions/123:regress", body) == (200, {"results": [5.0]})


def test_rest_examples_become_tf_examples_as_tf_serving_reads_json():
    from tensorflow.core.example import example_pb2

    from serving.rest import example_from_json

    ex = example_pb2.Example()
    example_from_json({"f": 1.5, "i": [1, 2], "b": True, "s": "ab", "raw": {"b64": "AAE="}, "none": []}, ex)
    f = ex.features.feature
    assert list(f["f"].float_list.value) == [1.5] and list(f["i"].int64_list.value) == [1, 2]
    assert list(f["b"].int64_list.value) == [1] and list(f["s"].bytes_list.value) == [b"ab"]
    assert list(f["raw"].bytes_list.value) == [b"\x00\x01"] and f["none"].WhichOneof("kind") is None


def test_rest_bad_classify_bodies_get_tf_serving_texts(server):
    cases = [({"signature_name": "classify_x_to_y"},
              "When method is classify, key 'examples' is expected and was not found"),
             ({"examples": {}}, "Expecting 'examples' value to be an list/array"),
             ({"examples": []}, "'examples' value is an empty array"),
             ({"examples": [1]}, "Example must be JSON object but got JSON Number"),
             ({"examples": [{"x": [1.0, 2]}]}, "Unexpected element type in feature: x expecting type: float"),
             ({"examples": [{"x": None}]}, "Feature: x has element with unexpected JSON type: Null"),
             ({"examples": [{"x": [[1.0]]}]}, "Feature: x has element with unexpected JSON type: Array"),
             ({"signature_name": 3, "examples": [{"x": 1.0}]}, "'signature_name' key must be a string value.")]
    for body, text in cases:
        assert rest(server, "/v1/models/tf2:classify", body) == (400, {"error": text}), body
