"""bench.record: a rerun replaces the figures but keeps the hand-added findings."""

import json

from bench import record


def test_a_rerun_keeps_the_findings_and_drops_the_rest(tmp_path):
    path = str(tmp_path / "x.json")
    record.write(path, {"seconds": 1.0}, command="python -m bench.x --old")
    with open(path) as f:
        old = json.load(f)
    old.update({"findings": [{"finding": "f", "command": "python -m bench.x --ablation"}], "notes": ["old run"]})
    with open(path, "w") as f:
        json.dump(old, f)

    out = record.write(path, {"seconds": 2.0}, command="python -m bench.x --new")
    with open(path) as f:
        assert json.load(f) == out == {"seconds": 2.0, "command": "python -m bench.x --new",
                                       "findings": [{"finding": "f", "command": "python -m bench.x --ablation"}]}


def test_the_command_a_bench_recorded_wins_over_the_process_command_line(tmp_path):
    path = str(tmp_path / "x.json")
    assert record.write(path, {"command": "python -m bench.x --seeds 0"})["command"] == "python -m bench.x --seeds 0"
    assert record.write(path, {})["command"].startswith(".venv/bin/python ")
