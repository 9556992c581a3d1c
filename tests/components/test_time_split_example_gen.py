"""TimeSplitExampleGen: train / validation / test by day, in the shape of TFX's example_gen executor tests."""

import csv
import glob
import json
import os

import pytest

from components.keys import TIME_SPLIT_KEY
from components.time_split_example_gen.split import SPLITS, SplitError, TimeSplit, day_of_path
from pipelines.options import SCHEMA_FILE

BEAM_ARGS = ["--runner=DirectRunner"]


def test_default_rule_tests_on_the_last_day_and_validates_on_the_day_before():
    rule = TimeSplit()
    days = [3, 0, 2, 1, 4]
    bounds = rule.boundaries(days)
    assert bounds == (3, 4)
    assert [SPLITS[rule.assign(d, bounds)] for d in range(5)] == ["train"] * 3 + ["validation", "test"]
    assert rule.split_days(days) == {"train": [0, 1, 2], "validation": [3], "test": [4]}


def test_gaps_between_days_and_longer_windows():
    rule = TimeSplit(test_days=2, validation_days=2)
    assert rule.split_days([10, 20, 30, 40, 50, 60]) == {"train": [10, 20], "validation": [30, 40],
                                                          "test": [50, 60]}


def test_too_few_days_name_the_data_and_the_need():
    with pytest.raises(SplitError, match=r"/data: 2 day\(s\) \[0, 1\], but the time split needs at least 3"):
        TimeSplit().boundaries([0, 1], "/data")


def test_a_hash_validation_slice_takes_its_share_of_the_training_days_only():
    rule = TimeSplit(validation_days=0, validation_percent=20)
    bounds = rule.boundaries([0, 1, 2])
    assigned = [rule.assign(d, bounds, f"row{n}".encode()) for n in range(5000) for d in (0, 1)]
    share = sum(1 for a in assigned if a == 1) / len(assigned)
    assert 0.17 < share < 0.23 and 2 not in assigned
    assert all(rule.assign(2, bounds, f"row{n}".encode()) == 2 for n in range(100))
    # the same row always lands in the same split
    assert [rule.assign(0, bounds, b"x")] * 3 == [rule.assign(0, bounds, b"x") for _ in range(3)]


def test_bad_options_and_paths_are_named():
    with pytest.raises(ValueError, match=r"unknown TimeSplit field\(s\): \[.test_day.\]"):
        TimeSplit.from_dict({"test_day": 1})
    with pytest.raises(SplitError, match="test_days must be >= 1"):
        TimeSplit.from_dict({"test_days": 0})
    assert day_of_path("/d/day=12/part-0.csv") == 12
    with pytest.raises(SplitError, match="/d/x/part-0.csv: not under a day=N folder"):
        day_of_path("/d/x/part-0.csv")


def _write_days(root, days, rows_per_day=6):
    for d in days:
        os.makedirs(os.path.join(root, f"day={d}"))
        with open(os.path.join(root, f"day={d}", "part-0.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["user_id", "day", "click"])
            for n in range(rows_per_day):
                w.writerow([f"u{d}_{n}", d, n % 2])


def _read_split(uri, split):
    import tensorflow as tf

    files = glob.glob(os.path.join(uri, f"Split-{split}", "*"))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _run_executor(root, out, tmp, time_split=None):
    from components.time_split_example_gen import executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as K
    from tfx.utils import proto_utils

    examples = standard_artifacts.Examples()
    examples.uri = out
    exec_properties = {
        K.INPUT_BASE_KEY: root,
        K.INPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Input(splits=[
            example_gen_pb2.Input.Split(name="all", pattern="day=*/*.csv")])),
        K.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(
            splits=[example_gen_pb2.SplitConfig.Split(name=s, hash_buckets=1) for s in SPLITS]))),
        K.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        K.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
        TIME_SPLIT_KEY: json.dumps(time_split or {}),
        K.SCHEMA_FILE_KEY: SCHEMA_FILE,
    }
    executor.Executor(executor.Executor.Context(beam_pipeline_args=BEAM_ARGS, tmp_dir=tmp, unique_id="1")).Do(
        {}, {K.EXAMPLES_KEY: [examples]}, exec_properties)
    return examples


def test_executor_writes_three_splits_disjoint_by_day(tmp_path):
    from tfx.dsl.io import fileio
    from tfx.types import artifact_utils

    root = str(tmp_path / "data")
    _write_days(root, [0, 1, 2, 3])
    examples = _run_executor(root, str(tmp_path / "out"), str(tmp_path), {"test_days": 1, "validation_days": 1})
    assert artifact_utils.decode_split_names(examples.split_names) == list(SPLITS)
    days = {s: sorted({e.features.feature["day"].int64_list.value[0] for e in _read_split(examples.uri, s)})
            for s in SPLITS}
    assert days == {"train": [0, 1], "validation": [2], "test": [3]}
    assert sum(len(_read_split(examples.uri, s)) for s in SPLITS) == 24
    assert fileio.exists(os.path.join(examples.uri, "Split-test"))


def _values(example):
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = tuple(getattr(feature, kind).value) if kind else ()
    return tuple(sorted((k, v) for k, v in out.items() if v))


def test_executor_writes_what_csv_example_gen_writes_shuffled_and_deterministic(tmp_path, monkeypatch):
    """Same rows and values as TFX's CsvExampleGen (which infers the types the contract gives), each split
    in a random order that is the same on a second run, in several buckets, with no temporary file left."""
    from tfx.components.example_gen.csv_example_gen import executor as csv_executor
    from tfx.proto import example_gen_pb2
    from tfx.types import standard_artifacts
    from tfx.types import standard_component_specs as K
    from tfx.utils import proto_utils

    from components.time_split_example_gen import executor
    from synthetic import generate as G

    root = str(tmp_path / "data")
    G.generate(root, G.GeneratorConfig(rows=1500, days=4, seed=3), progress=False)
    monkeypatch.setattr(executor, "BUCKET_BYTES", 64 << 10)
    ours = _run_executor(root, str(tmp_path / "a"), str(tmp_path / "tmp_a"))
    again = _run_executor(root, str(tmp_path / "b"), str(tmp_path / "tmp_b"))
    assert not glob.glob(str(tmp_path / "tmp_*" / "**" / "*.tfrecord"), recursive=True)

    tfx_out = standard_artifacts.Examples()
    tfx_out.uri = str(tmp_path / "tfx")
    csv_executor.Executor(csv_executor.Executor.Context(beam_pipeline_args=BEAM_ARGS, tmp_dir=str(tmp_path))).Do(
        {}, {K.EXAMPLES_KEY: [tfx_out]}, {
            K.INPUT_BASE_KEY: root,
            K.INPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Input(splits=[
                example_gen_pb2.Input.Split(name="all", pattern="day=*/*.csv")])),
            K.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(example_gen_pb2.Output(
                split_config=example_gen_pb2.SplitConfig(
                    splits=[example_gen_pb2.SplitConfig.Split(name="all", hash_buckets=1)]))),
            K.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE})
    reference = sorted(_values(e) for e in _read_split(tfx_out.uri, "all"))

    rows = {s: [_values(e) for e in _read_split(ours.uri, s)] for s in SPLITS}
    assert sorted(r for s in SPLITS for r in rows[s]) == reference
    assert {s: [_values(e) for e in _read_split(again.uri, s)] for s in SPLITS} == rows
    assert len(glob.glob(os.path.join(ours.uri, "Split-train", "data_tfrecord-*-of-*.gz"))) > 1

    # the raw files are ordered by user; a shuffled split is not (rank correlation with input order ~ 0)
    import numpy as np
    from scipy import stats

    def user_of(r):
        return dict(r)["user_id"][0]

    train = rows["train"]
    first_seen = {}
    for path in sorted(glob.glob(os.path.join(root, "day=*", "*.csv"))):
        with open(path) as f:
            for line in csv.DictReader(f):
                first_seen.setdefault(line["user_id"].encode(), len(first_seen))
    ranks = np.array([first_seen[user_of(r)] for r in train])
    assert abs(stats.spearmanr(ranks, np.arange(len(ranks))).statistic) < 0.15


def test_component_spec_carries_the_rule():
    from pipelines.options import EXAMPLE_GEN_ID, example_gen

    node = example_gen("/data", {"validation_days": 2})
    assert node.id == EXAMPLE_GEN_ID
    assert json.loads(node.exec_properties[TIME_SPLIT_KEY]) == {"test_days": 1, "validation_days": 2,
                                                              "validation_percent": 10}
    with pytest.raises(SplitError):
        example_gen("/data", {"validation_days": -1})


def test_a_column_the_schema_lacks_names_the_file_and_the_schema(tmp_path):
    root = str(tmp_path / "data")
    _write_days(root, [0, 1, 2])
    path = os.path.join(root, "day=1", "part-0.csv")
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join([lines[0] + ",surprise"] + [line + ",1" for line in lines[1:]]) + "\n")
    with pytest.raises(Exception, match=r"day=1/part-0.csv: columns not in .*schema.pbtxt: \['surprise'\]"):
        _run_executor(root, str(tmp_path / "out"), str(tmp_path / "tmp"))
