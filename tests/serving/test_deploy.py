"""Deploy manifests: parse, pin the TF Serving release, and agree with the config helper."""

import os

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.config import config_text, build_config, parse_config, read_config_file, write_models_config

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "serving", "deploy")
IMAGE = "tensorflow/serving:2.16.1"
CONFIG_FLAG = "--model_config_file=/models/models.config"
DOCKER_MODELS = {"keep_general": "/models/keep_general"}


def _load(*parts):
    with open(os.path.join(DEPLOY, *parts)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def _k8s():
    docs = []
    for name in sorted(os.listdir(os.path.join(DEPLOY, "k8s"))):
        if name.endswith(".yaml"):
            docs += _load("k8s", name)
    return {d["kind"]: d for d in docs}


def test_compose_runs_the_pinned_image_with_the_config_file():
    (compose,) = _load("docker-compose.yml")
    (service,) = compose["services"].values()
    assert service["image"] == IMAGE
    assert CONFIG_FLAG in service["command"]
    assert set(service["ports"]) == {"8500:8500", "8501:8501"}
    mounts = {v.rsplit(":", 2)[1] for v in service["volumes"]}  # SOURCE:TARGET:ro
    assert {"/models/models.config", "/models/keep_general"} <= mounts


def test_k8s_deployment_probe_and_service():
    docs = _k8s()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    assert CONFIG_FLAG in container["args"]
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    probe = container["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/v1/models/keep_general", 8501)
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/models/models.config", "/models/keep_general"} <= mounts
    service = docs["Service"]["spec"]
    assert {p["port"] for p in service["ports"]} == {8500, 8501}
    assert service["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_config_helper_output_parses_and_matches_the_manifests(tmp_path):
    path = write_models_config(str(tmp_path / "models.config"), DOCKER_MODELS)
    config = read_config_file(path)
    assert isinstance(config, model_server_config_pb2.ModelServerConfig)
    spec = parse_config(config)["keep_general"]
    assert spec.base_path == "/models/keep_general" and spec.policy.num_versions == 1
    expected = config_text(build_config(DOCKER_MODELS))
    with open(os.path.join(DEPLOY, "models.config")) as f:
        assert f.read() == expected
    configmap = _k8s()["ConfigMap"]["data"]["models.config"]
    parsed = text_format.Parse(configmap, model_server_config_pb2.ModelServerConfig())
    assert parsed == config
