"""The preprocessing_fn on Beam (in memory), on a handful of raw rows."""

import os
import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features as F
from models.preprocessing import preprocessing_fn
from schemas import contract


def _row(user, item, scenario, hist="", price=None, click=0):
    row = {c: [] for c in contract.RAW_COLUMNS}
    row.update(user_id=[user.encode()], item_id=[item.encode()], scenario_id=[scenario.encode()], day=[0],
               session_id=[b"s"], click=[click], conversion=[0], cart=[0], category_id=[b"c1"])
    if hist:
        row["hist_item_ids"] = [hist.encode()]
    if price is not None:
        row["item_price"] = [price]
    return row


def test_vocabularies_padding_numerics_and_exposure_counts():
    with open(os.path.join(os.path.dirname(contract.__file__), "schema.pbtxt")) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    spec = schema_utils.schema_as_feature_spec(schema).feature_spec
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    rows = [_row("u1", "i1", "feed", "i2 i1", 10.0, 1), _row("u1", "i2", "feed", "i1", 20.0),
            _row("u1", "i1", "pay"), _row("u2", "i3", "feed", "", 5.0)]
    with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
        (out, _), _ = (rows, metadata) | tft_beam.AnalyzeAndTransformDataset(preprocessing_fn)
    ids = [r["item_id"] for r in out]
    assert ids[0] == ids[2] != ids[1] and min(ids) >= 1  # 0 is reserved for "absent"
    hist0 = list(out[0]["hist_item_ids"])
    assert len(hist0) == F.SEQUENCE_LENGTH and hist0[2:] == [0] * (F.SEQUENCE_LENGTH - 2)
    assert hist0[1] == ids[0] and hist0[0] == ids[1]  # histories share the item vocabulary
    assert list(out[3]["hist_item_ids"]) == [0] * F.SEQUENCE_LENGTH
    assert out[2]["item_price"] == 0.0 and out[1]["item_price"] > out[0]["item_price"] > out[3]["item_price"]
    # u1 was shown 2 items in feed and 1 in pay: more exposures, higher z-score.
    assert out[0]["user_scenario_exposures"] == out[1]["user_scenario_exposures"] > out[2]["user_scenario_exposures"]
    assert out[0]["click"] == 1.0 and out[1]["click"] == 0.0


def test_asset_table_is_built_once_outside_the_traced_function(tmp_path):
    """models.preprocessing's use of tft's private table helper (checked against tensorflow-transform 1.16.0)."""
    from models.preprocessing import _lookup_in_asset_table

    path = tmp_path / "counts"
    path.write_text("3 u1|feed\n1 u2|pay\n")
    eager = []

    def construct(asset):
        eager.append(tf.executing_eagerly())
        init = tf.lookup.TextFileInitializer(asset, key_dtype=tf.string, key_index=1, value_dtype=tf.string,
                                             value_index=0, delimiter=" ")
        return tf.lookup.StaticHashTable(init, default_value="0")

    @tf.function
    def lookup(keys):
        return _lookup_in_asset_table(construct, str(path), keys)

    keys = tf.constant(["u2|pay", "u1|feed", "u3|feed"])
    assert lookup(keys).numpy().tolist() == [b"1", b"3", b"0"]
    assert lookup(keys).numpy().tolist() == [b"1", b"3", b"0"]
    assert eager == [True]  # built once, lifted out of the traced function


def test_exposure_counts_are_fitted_on_the_train_days_only(transformed):
    """The per-scenario exposure counts (PEPNet's domain statistics) ignore validation and test rows."""
    import collections
    import csv
    import glob
    import os

    data, t = transformed
    train, every = collections.Counter(), collections.Counter()
    for path in glob.glob(os.path.join(data, "day=*", "*.csv")):
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                key = f"{r['user_id']}|{r['scenario_id']}"
                every[key] += 1
                if int(r["day"]) <= 1:  # 4 days: train 0-1, validation 2, test 3
                    train[key] += 1
    assets = os.path.join(t.transform_graph, "transform_fn", "assets")
    with open(os.path.join(assets, "user_scenario_exposures")) as f:
        counted = {key: int(float(n)) for n, key in (line.split(" ", 1) for line in f.read().splitlines())}
    assert counted == dict(train) and counted != dict(every)
