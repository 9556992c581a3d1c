"""bench.tf_serving_tests on a stand-in checkout: a test file in TF Serving's layout whose tests start
the shim as TF Serving's own do, one passing through this server and one failing on purpose."""

import json
import os
import subprocess

import pytest

from tests.serving import half_plus_two

pytestmark = pytest.mark.slow

TEST_FILE = '''
import json, os, subprocess, tempfile, time, unittest

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

ROOT = os.path.join(os.environ["TEST_SRCDIR"], "tf_serving/tensorflow_serving")


class TensorflowModelServerTest(unittest.TestCase):
  def testPredictThroughTheShim(self):
    port_file = os.path.join(tempfile.mkdtemp(), "ports.json")
    proc = subprocess.Popen([os.path.join(ROOT, "model_servers/tensorflow_model_server"), "--port=0",
                             "--rest_api_port=0", "--port_file=" + port_file, "--model_name=default",
                             "--model_base_path=" + os.path.join(ROOT, "servables/tensorflow/testdata/hp2"),
                             "--prefer_tflite_model=true"])
    try:
      while not os.path.exists(port_file):
        self.assertIsNone(proc.poll())
        time.sleep(0.1)
      request = predict_pb2.PredictRequest()
      request.model_spec.name = "default"
      request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0]], np.float32)))
      with grpc.insecure_channel("localhost:%d" % json.load(open(port_file))["grpc_port"]) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
      self.assertEqual(list(response.outputs["y"].float_val), [3.0])
    finally:
      proc.kill()

  def testPlantedFailure(self):
    raise AssertionError("planted")


if __name__ == "__main__":
  unittest.main()
'''


def _checkout(root):
    tree = os.path.join(root, "tensorflow_serving")
    os.makedirs(os.path.join(tree, "model_servers", "test_util"))
    with open(os.path.join(tree, "model_servers", "tensorflow_model_server_test.py"), "w") as f:
        f.write(TEST_FILE)
    half_plus_two(os.path.join(tree, "servables", "tensorflow", "testdata", "hp2"))
    return root


def test_each_test_runs_in_its_own_process_and_the_table_names_failures(tmp_path):
    from bench import tf_serving_tests

    checkout = _checkout(str(tmp_path / "serving"))
    output = tmp_path / "result.json"
    assert tf_serving_tests.main(["--serving", checkout, "--timeout", "120", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    by_name = {r["test"]: r for r in result["results"]}
    assert set(by_name) == {"testPredictThroughTheShim", "testPlantedFailure"}
    assert by_name["testPredictThroughTheShim"]["passed"], by_name["testPredictThroughTheShim"]["error"]
    assert not by_name["testPlantedFailure"]["passed"]
    assert by_name["testPlantedFailure"]["error"] == "AssertionError: planted"
    assert result["passed"] == 1 and result["tests"] == 2


def test_a_git_mirror_is_read_at_head_and_its_absent_objects_are_listed(tmp_path):
    from bench import tf_serving_tests

    checkout = _checkout(str(tmp_path / "serving"))
    git = ["git", "-C", checkout, "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
    lost = "tensorflow_serving/servables/tensorflow/testdata/hp2/00000123/saved_model.pb"
    blob = subprocess.run(git + ["rev-parse", f"HEAD:{lost}"], check=True, capture_output=True, text=True).stdout
    os.remove(os.path.join(checkout, ".git", "objects", blob[:2], blob.strip()[2:]))  # as an LFS-less mirror
    dest = tmp_path / "extracted"
    assert tf_serving_tests.extract(os.path.join(checkout, ".git"), str(dest)) == [lost]
    assert (dest / "tensorflow_serving/model_servers/tensorflow_model_server_test.py").read_text() == TEST_FILE
