"""Finds ops in a SavedModel that stock TF Serving cannot run.

Walks every GraphDef in `saved_model.pb` (each meta graph and every function of its
function library) and reports Python-callback ops (`tf.py_function`,
`tf.numpy_function`: they need a Python interpreter the server does not have) and ops
not registered in stock TensorFlow (custom kernels, tf-text ops and the like).

    python -m serving.ops_check runs/serving/keep_general/1795457441
    python -m serving.ops_check runs/serving/keep_general      # every version under a base path

Prints JSON {path: [ops]} and exits 1 when any path has unsupported ops.
"""

import argparse
import json
import os
import sys
from typing import Dict, Iterable, Set

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402,F401 - registers the stock op set
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

PYTHON_OPS = frozenset({"PyFunc", "EagerPyFunc", "PyFuncStateless"})


def _registered(op: str) -> bool:
    """Whether this process's TensorFlow has `op` registered. No public API says so
    (tf.raw_ops lacks the ops without a Python wrapper, ~450 of ~1900): TF's private
    op_def_registry, checked against TensorFlow 2.16.2; tests/serving/test_ops_check.py
    fails if it stops answering."""
    from tensorflow.python.framework import op_def_registry

    return op_def_registry.get(op) is not None


def _graph_ops(graph_def) -> Iterable[str]:
    for node in graph_def.node:
        yield node.op
    for fn in graph_def.library.function:
        for node in fn.node_def:
            yield node.op


def unsupported_ops(saved_model_dir: str) -> Set[str]:
    """Ops in the SavedModel at `saved_model_dir` that stock TF Serving lacks."""
    path = os.path.join(saved_model_dir, "saved_model.pb")
    try:
        with open(path, "rb") as f:
            saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read SavedModel: {e}") from e
    found = set()
    for meta_graph in saved_model.meta_graphs:
        graph = meta_graph.graph_def
        # A node whose op is a library function's name is a call, not a kernel.
        functions = {fn.signature.name for fn in graph.library.function}
        for op in _graph_ops(graph):
            if op in PYTHON_OPS or (op not in functions and not _registered(op)):
                found.add(op)
    return found


def check_path(path: str) -> Dict[str, list]:
    """{SavedModel dir: sorted unsupported ops}; a base path checks each integer version in it."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return {path: sorted(unsupported_ops(path))}
    versions = sorted((d for d in os.listdir(path) if d.isdigit()
                       and os.path.isfile(os.path.join(path, d, "saved_model.pb"))), key=int)
    if not versions:
        raise FileNotFoundError(f"{path}: neither a SavedModel nor a base path with version folders")
    return {os.path.join(path, v): sorted(unsupported_ops(os.path.join(path, v))) for v in versions}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="SavedModel folders or model base paths")
    a = p.parse_args(argv)
    report = {}
    try:
        for path in a.paths:
            report.update(check_path(path))
    except (OSError, ValueError) as e:
        print(f"ops_check: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
