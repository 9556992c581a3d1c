"""Classify, Regress and MultiInference: the tf.Example APIs, as TF Serving answers them.

TF Serving's servables/tensorflow/classifier.cc, regressor.cc, multi_inference.cc and
util.cc are the specification; the texts of their errors are kept. The request's
`Input` becomes one string tensor of serialized tf.Examples (with a context, each row is
the context's bytes then the example's, which protobuf parses as the two merged) fed to
the signature's one input, `inputs`. As tensorflow_model_server by default
(--enable_signature_method_name_check=false), a signature of any method answers if its
inputs and outputs have the keys the API needs: `classes` and/or `scores` to classify,
`outputs` to regress. MultiInference runs each task's signature on the same rows, one
call per signature, where TF Serving runs them in one session call: the results are the
same.
"""

from typing import Dict, List, Tuple

import grpc
import numpy as np
from tensorflow_serving.apis import (classification_pb2, inference_pb2, input_pb2, model_pb2,
                                     regression_pb2)

from serving.errors import ServingError, invalid
from serving.servable import DEFAULT_SIGNATURE, Servable

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
INPUTS = "inputs"  # the one input of a classification or regression signature
CLASSES, SCORES, OUTPUTS = "classes", "scores", "outputs"


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """util.cc InputToSerializedExampleTensor: [rows] serialized tf.Examples."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        rows = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        rows = [context + e.SerializeToString() for e in request_input.example_list_with_context.examples]
    else:
        rows = []
    if not rows:
        raise invalid("Input is empty.")
    return np.array(rows, dtype=object)


def count_examples(request_input: input_pb2.Input) -> int:
    kind = request_input.WhichOneof("kind")
    return len(getattr(request_input, kind).examples) if kind else 0


def _signature_def(servable: Servable, model_spec: model_pb2.ModelSpec, not_found: str):
    name = model_spec.signature_name or DEFAULT_SIGNATURE
    sdef = servable.signature_def(name)
    if sdef is None or name not in servable.signatures:
        raise invalid(f"{not_found}{name}")
    return name, sdef


def _inputs(sdef, what: str) -> None:
    if len(sdef.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if INPUTS not in sdef.inputs:
        raise invalid(f"No {what} inputs found in SignatureDef: {sdef}")


def classification_outputs(sdef) -> List[str]:
    """classifier.cc PreProcessClassification: the output keys to fetch."""
    _inputs(sdef, "classification")
    if len(sdef.outputs) not in (1, 2):
        raise invalid(f"Expected one or two output Tensors, found {len(sdef.outputs)}")
    keys = [k for k in (CLASSES, SCORES) if k in sdef.outputs]
    if not keys:
        raise invalid(f'Expected classification signature outputs to contain at least one of "{CLASSES}" or '
                      f'"{SCORES}". Signature was: {sdef}')
    return keys


def regression_outputs(sdef) -> List[str]:
    """regressor.cc PreProcessRegression."""
    _inputs(sdef, "regression")
    if len(sdef.outputs) != 1:
        raise invalid("Expected one output Tensor.")
    if OUTPUTS not in sdef.outputs:
        raise invalid(f"No regression outputs found in SignatureDef: {sdef}")
    return [OUTPUTS]


def _shape(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def classification_result(outputs: Dict[str, np.ndarray], rows: int) -> classification_pb2.ClassificationResult:
    """classifier.cc PostProcessClassificationResult."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for array, kind, dtype in ((classes, "classes", "DT_STRING"), (scores, "scores", "DT_FLOAT")):
        if array is None:
            continue
        if array.ndim != 2:
            raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {_shape(array)}")
        if (array.dtype.kind not in "OSU") if kind == "classes" else (array.dtype != np.float32):
            raise invalid(f"Expected {kind} Tensor of {dtype}. Got: {array.dtype}")
        if array.shape[0] != rows:
            raise invalid(f"Expected {kind} output batch size of {rows}. Got: {array.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                      f"{scores.shape[1]}")
    result = classification_pb2.ClassificationResult()
    width = (classes if classes is not None else scores).shape[1]
    for i in range(rows):
        row = result.classifications.add()
        for c in range(width):
            cl = row.classes.add()
            if classes is not None:
                label = classes[i, c]
                cl.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                cl.score = float(scores[i, c])
    return result


def regression_result(outputs: Dict[str, np.ndarray], rows: int) -> regression_pb2.RegressionResult:
    """regressor.cc PostProcessRegressionResult."""
    values = outputs[OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                      f"{_shape(values)}")
    if values.shape[0] != rows:
        raise invalid(f"Input batch size did not match output batch size: {rows} vs. {values.shape[0]}")
    if values.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {values.dtype}")
    result = regression_pb2.RegressionResult()
    for v in values.reshape(-1):
        result.regressions.add().value = float(v)
    return result


def _run(servable: Servable, signature: str, keys: List[str], examples: np.ndarray) -> Dict[str, np.ndarray]:
    outputs = servable.run(servable.signature(signature), {INPUTS: examples})
    return {k: outputs[k] for k in keys}


def _model_spec(spec: model_pb2.ModelSpec, servable: Servable, signature: str) -> None:
    """util.cc MakeModelSpec: name, version, and the signature's name (the default's when empty)."""
    spec.Clear()
    spec.name = servable.model_name
    spec.signature_name = signature
    spec.version.value = servable.version


def _one_signature(servable: Servable, request, outputs_of, result_of, response):
    name, sdef = _signature_def(servable, request.model_spec, "No signature was found with the name: ")
    keys = outputs_of(sdef)
    examples = serialized_examples(request.input)
    response.result.CopyFrom(result_of(_run(servable, name, keys, examples), len(examples)))
    _model_spec(response.model_spec, servable, name)
    return response


def classify(servable: Servable, request: classification_pb2.ClassificationRequest
             ) -> classification_pb2.ClassificationResponse:
    return _one_signature(servable, request, classification_outputs, classification_result,
                          classification_pb2.ClassificationResponse())


def regress(servable: Servable, request: regression_pb2.RegressionRequest) -> regression_pb2.RegressionResponse:
    return _one_signature(servable, request, regression_outputs, regression_result,
                          regression_pb2.RegressionResponse())


def check_tasks(request: inference_pb2.MultiInferenceRequest) -> None:
    """multi_inference.cc's checks of the tasks themselves."""
    model, seen = "", set()
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid("Found ModelSpec with an empty model name.")
        if model and task.model_spec.name != model:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        model = task.model_spec.name
        signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if signature in seen:
            raise invalid(f"Duplicate evaluation of signature: {signature}")
        seen.add(signature)


def multi_inference(servable: Servable, request: inference_pb2.MultiInferenceRequest
                    ) -> inference_pb2.MultiInferenceResponse:
    """multi_inference.cc TensorFlowMultiInferenceRunner::Infer."""
    check_tasks(request)
    plan: List[Tuple[str, str, List[str]]] = []
    for task in request.tasks:
        name, sdef = _signature_def(servable, task.model_spec, "Requested signature not found in model graph: ")
        if task.method_name == CLASSIFY_METHOD:
            keys = classification_outputs(sdef)
        elif task.method_name == REGRESS_METHOD:
            keys = regression_outputs(sdef)
        else:
            raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {task.method_name}")
        plan.append((name, task.method_name, keys))
    examples = serialized_examples(request.input)
    response = inference_pb2.MultiInferenceResponse()
    for task, (name, method, keys) in zip(request.tasks, plan):
        outputs = _run(servable, name, keys, examples)
        result = response.results.add()
        if method == CLASSIFY_METHOD:
            result.classification_result.CopyFrom(classification_result(outputs, len(examples)))
        else:
            result.regression_result.CopyFrom(regression_result(outputs, len(examples)))
        _model_spec(result.model_spec, servable, name)
    return response
