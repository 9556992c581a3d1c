import json

import pytest

pytestmark = pytest.mark.slow


def test_generate_bench_writes_one_result_per_size(tmp_path):
    from bench import generate

    output = tmp_path / "generate.json"
    generate.main(["--rows", "300", "600", "--output", str(output)])
    result = json.loads(output.read_text())
    assert [r["rows"] for r in result["results"]] == [300, 600]
    for r in result["results"]:
        assert r["seconds"] >= 0 and r["rows_per_second"] > 0 and r["users"] > 0 and r["items"] > 0
