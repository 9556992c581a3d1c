import glob
import inspect
import json
import os

import pytest

pytestmark = pytest.mark.slow


def test_transform_bench_times_each_size_and_keeps_earlier_sizes(transformed, tmp_path, monkeypatch):
    from bench import transform as bench
    from pipelines.options import DEFAULT_BEAM_ARGS
    from pipelines.transform_only import run_transform

    _, done = transformed
    calls = []

    # A Transform run costs about a minute even on 100 rows: the session's stands in for it,
    # called as the real one would be (a changed signature fails the bind).
    def transform(*args, **kwargs):
        call = inspect.signature(run_transform).bind(*args, **kwargs).arguments
        assert os.path.isfile(os.path.join(call["data_root"], "scenarios.csv"))
        if call.get("examples_uri"):
            calls.append(len(glob.glob(os.path.join(call["examples_uri"], "Split-*", "*"))))
        else:
            calls.append(None)
        assert list(call["beam_args"]) == list(DEFAULT_BEAM_ARGS)
        return done

    monkeypatch.setattr(bench, "run_transform", transform)
    written, example_gen = tmp_path / "transform.json", tmp_path / "transform_example_gen.json"
    bench.main(["--rows", "200", "--output", str(written)])
    bench.main(["--rows", "100", "--examples", "example_gen", "--output", str(example_gen)])
    bench.main(["--rows", "100", "--output", str(written)])
    assert calls == [12, None, 12]  # write_examples' 4 shards of each of the 3 splits; then ExampleGen's own

    got = json.loads(written.read_text())
    assert got["examples"] == "written" and got["beam_args"] == " ".join(DEFAULT_BEAM_ARGS)
    assert [r["rows"] for r in got["results"]] == [100, 200]  # the second run kept the first's size
    for r in got["results"]:
        assert r["transform_seconds"] == round(done.transform_seconds, 1)
        assert r["rows_per_second"] == round(r["rows"] / done.transform_seconds)
        assert r["pipeline_seconds"] >= 0
    assert json.loads(example_gen.read_text())["examples"] == "example_gen"
