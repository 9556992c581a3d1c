"""One error type for the whole server, carrying TF Serving's status code.

The gRPC front end aborts with the code; the REST front end maps it to the HTTP status
TF Serving's `http_server.cc` uses, so both protocols agree on what went wrong.
"""

from typing import Optional

import grpc
import tensorflow as tf

# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc): CANCELLED is
# CLIENT_CLOSED_REQUEST (499), DEADLINE_EXCEEDED is GATEWAY_TO (504).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.UNAVAILABLE: 503,
}

# TensorFlow's error codes are numerically gRPC's.
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request failed with a TF Serving status code and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    def __str__(self):
        return f"{self.code.name}: {self.message}"


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def servable_not_found(name: str, version: Optional[int] = None, detail: str = "") -> ServingError:
    """TF Serving's NOT_FOUND for a model or version it does not serve (core/basic_manager.cc), the request
    named as core/manager.h's ServableRequest::DebugString does; clients (TF Serving's own readiness
    check) match on "Servable". `detail`, ours, follows in brackets."""
    request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return not_found(f"Servable not found for request: {request}" + (f" ({detail})" if detail else ""))


def tf_error_text(message: str) -> str:
    """TF's whole error message, less the Python stack of where the failing op was defined.

    The first line alone is often just "Graph execution error:"; the cause ("Could not
    parse example input ...") and the node come after the stack, and the caller needs them.
    """
    out, skipping = [], False
    for line in message.splitlines():
        if line.startswith("Detected at node"):
            skipping = True
            continue
        if skipping and (not line.strip() or line.startswith("  ") or line.startswith("<stack traces")):
            continue
        skipping = False
        if line.strip() or (out and out[-1].strip()):
            out.append(line)
    return "\n".join(out).strip()


def from_tf_error(err: tf.errors.OpError, context: str) -> ServingError:
    """Surfaces a TensorFlow runtime error (e.g. an unparsable tf.Example) with its own code."""
    code = _BY_NUMBER.get(err.error_code, grpc.StatusCode.UNKNOWN)
    text = tf_error_text(err.message or str(err)) or type(err).__name__
    return ServingError(code, f"{context}: {text}")


def resource_exhausted(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
