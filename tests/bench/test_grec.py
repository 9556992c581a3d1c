import json

import pytest

pytestmark = pytest.mark.slow


def test_grec_bench_extracts_an_exact_subnetwork_and_times_every_model(transformed, tmp_path):
    from bench import grec

    _, result = transformed
    output = tmp_path / "grec.json"
    grec.main(["--calls", "3", "--transform", result.transform_graph, "--task", "conversion",
               "--output", str(output)])
    got = json.loads(output.read_text())
    config, params = got["config"], got["parameters"]
    assert config["task"] == "conversion" and len(config["experts"]) == config["top_k"] < config["num_experts"]
    # The sub-network is the full model's routed part: fewer parameters, the same logit.
    assert 0 < params["subnetwork"] < params["full_task_sentence"]
    assert params["subnetwork"] <= params["subnetwork_bound"]
    assert got["subnetwork_max_abs_logit_difference"] < 1e-5
    assert set(got["batch1_latency_ms"]) == {"full_token", "full_task_sentence", "subnetwork"}
    for timing in got["batch1_latency_ms"].values():
        assert 0 < timing["p50"] <= timing["p99"]
