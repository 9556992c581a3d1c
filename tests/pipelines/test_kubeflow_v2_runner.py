import json

from pipelines import kubeflow_v2_runner
from pipelines.keep_samd import create_pipeline
from pipelines.options import PipelineOptions


def test_compiles_a_kfp_v2_pipeline_spec(tmp_path):
    out = tmp_path / "keep_samd_pipeline.json"
    assert kubeflow_v2_runner.main([
        "--image", "registry.example/keep_samd:1", "--output", "gs://bucket/runs", "--data", "gs://bucket/data",
        "--pipeline-file", str(out), "--beam-args", "--runner=DataflowRunner --project=p",
    ]) == 0
    spec = json.loads(out.read_text())
    tasks = spec["pipelineSpec"]["root"]["dag"]["tasks"] if "pipelineSpec" in spec else spec["root"]["dag"]["tasks"]
    assert {"RawDataCheck", "CsvExampleGen", "ValidationGate", "Transform", "KeepTrainer", "KeepPusher"} <= set(tasks)
    text = out.read_text()
    assert "registry.example/keep_samd:1" in text and "DataflowRunner" in text


def test_local_pipeline_has_the_documented_order(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    p = create_pipeline(PipelineOptions(output_dir=str(tmp_path / "runs"), data_root=str(data)))
    ids = [c.id for c in p.components]
    assert ids.index("RawDataCheck") < ids.index("CsvExampleGen") < ids.index("Transform") < ids.index("KeepTrainer")
    upstream = {c.id: {u.id for u in c.upstream_nodes} for c in p.components}
    assert "RawDataCheck" in upstream["CsvExampleGen"]
    assert "ValidationGate" in upstream["Transform"]
    assert p.pipeline_info.pipeline_root.startswith(str(tmp_path / "runs"))
