"""write_examples (ExampleGen's layout without Beam) and Transform on imported examples."""

import glob
import os

import pytest


def _examples(split_dir):
    import tensorflow as tf

    files = sorted(glob.glob(os.path.join(split_dir, "*")))
    kind = "GZIP" if files[0].endswith(".gz") else ""
    out = []
    for record in tf.data.TFRecordDataset(files, compression_type=kind):
        example = tf.train.Example.FromString(record.numpy())
        row = {}
        for name, feature in example.features.feature.items():
            which = feature.WhichOneof("kind")
            values = list(getattr(feature, which).value) if which else []
            # ExampleGen infers a column's type from its values; compare numbers as numbers
            row[name] = tuple(v if isinstance(v, bytes) else round(float(v), 4) for v in values)
        out.append(tuple(sorted(row.items())))
    return out


def _days(examples):
    return {int(v) for row in examples for name, values in row if name == "day" for v in values}


def test_written_examples_equal_example_gens_split_by_day(transformed, tmp_path):
    from pipelines.transform_only import write_examples

    data, result = transformed
    seen = []
    rows = write_examples(data, str(tmp_path / "examples"), shards=3, progress=seen.append)
    splits = ("train", "validation", "test")
    ours = {s: _examples(str(tmp_path / "examples" / f"Split-{s}")) for s in splits}
    theirs = {s: _examples(os.path.join(result.raw_examples, f"Split-{s}")) for s in splits}
    assert rows == 4000 == sum(len(v) for v in ours.values()) == seen[-1]
    for s in splits:  # the same rows in each split, ExampleGen's and ours
        assert sorted(ours[s]) == sorted(theirs[s]), s
    # 4 days: train 0-1, validation 2, test 3 (the last); disjoint by day
    assert (_days(theirs["train"]), _days(theirs["validation"]), _days(theirs["test"])) == ({0, 1}, {2}, {3})
    assert len(glob.glob(str(tmp_path / "examples" / "Split-train" / "*"))) == 3


def test_transform_runs_on_imported_examples_like_on_example_gens(transformed, tmp_path):
    import tensorflow as tf

    from pipelines.transform_only import run_transform, write_examples

    data, result = transformed
    write_examples(data, str(tmp_path / "examples"))
    imported = run_transform(data, str(tmp_path / "work"), examples_uri=str(tmp_path / "examples"))
    assert imported.raw_examples == str(tmp_path / "examples") and imported.transform_seconds > 0

    def count(uri):
        files = glob.glob(os.path.join(uri, "Split-*", "*"))
        return sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))

    assert count(imported.transformed_examples) == count(result.transformed_examples) == 4000
    # the same analyzers wrote their vocabularies
    ours = sorted(os.listdir(os.path.join(imported.transform_graph, "transform_fn", "assets")))
    theirs = sorted(os.listdir(os.path.join(result.transform_graph, "transform_fn", "assets")))
    assert ours == theirs and ours


def test_a_column_outside_the_schema_is_named(tmp_path):
    from pipelines.transform_only import write_examples

    (tmp_path / "one" / "day=0").mkdir(parents=True)
    (tmp_path / "one" / "day=0" / "part-00000.csv").write_text("user_id,day\nu1,0\n")
    with pytest.raises(ValueError, match=r"1 day\(s\) \[0\], but the time split needs at least 3"):
        write_examples(str(tmp_path / "one"), str(tmp_path / "out"))
    for d in range(3):
        day = tmp_path / "data" / f"day={d}"
        day.mkdir(parents=True)
        (day / "part-00000.csv").write_text("user_id,surprise\nu1,3\n")
    with pytest.raises(ValueError, match=r"part-00000.csv: columns not in .*schema.pbtxt: \['surprise'\]"):
        write_examples(str(tmp_path / "data"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="no day="):
        write_examples(str(tmp_path / "nothing"), str(tmp_path / "out"))
