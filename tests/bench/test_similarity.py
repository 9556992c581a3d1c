import json

import pytest

pytestmark = pytest.mark.slow


def test_similarity_bench_matches_numpy_on_beam(tmp_path):
    from bench import similarity

    output = tmp_path / "similarity.json"
    # Files of 1,000 rows: each user's rows land in several files, as the bench intends.
    similarity.main(["--users", "1000", "--workers", "1", "--rows-per-file", "1000", "--output", str(output)])
    got = json.loads(output.read_text())
    assert got["equals_numpy"] is True and got["max_relative_difference"] < 1e-9
    assert got["users"] == 1000 and got["rows"] > got["users"] and got["files"] == -(-got["rows"] // 1000)
    assert got["scenario_sets"] > 1 and got["users_per_second"] > 0
    assert "--direct_num_workers=1" in got["runner"]
