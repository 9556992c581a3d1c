"""The General Knowledge Center's run on real transformed examples: cache = heads, per key."""

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from models import features as F
from tests.trainers import custom_config
from trainers import knowledge_center
from models.keep_cache import knowledge_parts, lookup_knowledge
from trainers.transformed_data import load_transformed, raw_ids


@pytest.fixture(scope="module", params=["both"])
def gkc(request, transformed, tmp_path_factory):
    _, t = transformed
    out = str(tmp_path_factory.mktemp(f"gkc_{request.param}"))
    record = knowledge_center.run(os.path.join(t.transformed_examples, "Split-train", "*"),
                                  os.path.join(t.transformed_examples, "Split-validation", "*"), t.transform_graph,
                                  os.path.join(out, "Format-Serving"), out, train_steps=30, version=1700000001,
                                  custom=custom_config("knowledge_center", knowledge={"strategy": request.param,
                                                                                   "batch_size": 128}, epochs=1))
    return t, out, record


def test_every_key_of_the_train_days_is_cached_and_equals_the_heads_on_its_latest_row(gkc):
    import tensorflow_transform as tft

    t, out, record = gkc
    tft_output = tft.TFTransformOutput(t.transform_graph)
    rows = load_transformed(os.path.join(t.transformed_examples, "Split-train", "*"), tft_output)
    ids = {k: raw_ids(tft_output, k, rows[k]) for k in ("user_id", "item_id", "category_id")}
    assert record["keys"]["user"] == len(set(ids["user_id"]))
    assert record["keys"]["item"] == len(set(ids["item_id"]))
    assert record["keys"]["user_category"] == len(set(zip(ids["user_id"], ids["category_id"])))
    assert record["version"] == 1700000001 and record["width"] == 4 * 32

    # The latest row of each of some users: the cache must hold the heads' parts computed on it.
    order = np.argsort(rows[F.DAY], kind="stable")
    last = {}
    for n in order:
        last[ids["user_id"][n]] = n
    chosen = np.array(sorted(last.values())[:50])
    heads = knowledge_center.load_heads(out)
    names = [n for n in knowledge_center._model_inputs(heads.config) if n not in F.LABELS]
    parts = heads.parts({k: tf.constant(rows[k][chosen]) for k in names})
    served = tf.saved_model.load(os.path.join(out, "Format-Serving")).signatures["serving_default"](
        user_id=tf.constant(ids["user_id"][chosen].astype(bytes)), item_id=tf.constant(ids["item_id"][chosen].astype(bytes)),
        category_id=tf.constant(ids["category_id"][chosen].astype(bytes)))
    width = heads.config.knowledge_dim
    knowledge = served["knowledge"].numpy()
    layout = knowledge_parts("both")
    np.testing.assert_allclose(knowledge[:, :width], parts["user"].numpy(), atol=1e-5)
    np.testing.assert_allclose(knowledge[:, layout.index("user_category") * width:], parts["user_category"].numpy(),
                               atol=1e-5)
    assert served["found_user"].numpy().all()
    assert set(served["version"].numpy().tolist()) == {b"1700000001"}


def test_unseen_keys_get_the_zero_default(gkc):
    _, out, _ = gkc
    k = lookup_knowledge(os.path.join(out, "Format-Serving"), [b"nobody"], [b"nothing"], [b"none"])
    assert k.shape == (1, 128) and not k.any()


def test_the_record_says_what_was_cached(gkc):
    _, out, record = gkc
    with open(os.path.join(out, knowledge_center.CACHE_FILE)) as f:
        assert json.load(f) == json.loads(json.dumps(record))
    assert glob.glob(os.path.join(out, "Format-Serving", "saved_model.pb"))
    assert 0.0 <= record["validation"]["auc_click"] <= 1.0 and record["days"] == [0, 1]
