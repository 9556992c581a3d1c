import numpy as np
import tensorflow as tf

import pytest

from models.configs import ConfigError
from trainers import config as config_module
from trainers.config import KerasTrainerConfig
from trainers.epochs import epoch_steps
from trainers.generic import CORRUPTIONS, count_rows, only_scenarios, read_roles


def test_only_scenarios_reforms_full_batches_from_the_chosen_scenarios_rows():
    scenario = np.array([1, 2, 3, 1, 1, 2, 3, 1, 3, 1], np.int64)
    ds = tf.data.Dataset.from_tensor_slices({"scenario_id": scenario, "row": np.arange(10)}).batch(4)
    batches = list(only_scenarios(ds, [1, 3], batch_size=3))
    rows = np.concatenate([b["row"].numpy() for b in batches])
    assert [len(b["row"]) for b in batches] == [3, 3]  # 8 rows kept, the last partial batch dropped
    np.testing.assert_array_equal(rows, [0, 2, 3, 4, 6, 7])
    assert set(scenario[rows]) == {1, 3}


def test_read_roles(tmp_path):
    path = tmp_path / "scenarios.csv"
    path.write_text("scenario_id,role,exposure_position,business_type,item_family\n"
                    "home,super,top,feed,general\nbanner,minor,top,ads,general\n")
    assert read_roles(str(path)) == {"home": "super", "banner": "minor"}


def _batch():
    return {"click": tf.constant([1.0, 0.0, 1.0, 0.0, 0.0]), "conversion": tf.constant([1.0, 0.0, 0.0, 0.0, 0.0]),
            "cart": tf.constant([0.0, 0.0, 1.0, 0.0, 0.0]), "user_id": tf.constant([1, 2, 3, 4, 5], tf.int64)}


def test_shuffled_labels_move_together_and_keep_the_features():
    tf.random.set_seed(1)
    b = _batch()
    moved = False
    for _ in range(5):
        out = CORRUPTIONS["shuffle"](b)
        np.testing.assert_array_equal(out["user_id"], b["user_id"])
        rows = sorted(zip(*(out[t].numpy().tolist() for t in ("click", "conversion", "cart"))))
        assert rows == sorted(zip(*(b[t].numpy().tolist() for t in ("click", "conversion", "cart"))))
        moved |= not np.array_equal(out["click"], b["click"])
    assert moved


def test_inverted_labels():
    out = CORRUPTIONS["invert"](_batch())
    np.testing.assert_array_equal(out["click"], [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(out["cart"], [1, 1, 0, 1, 1])


def test_the_trainer_config_names_a_misspelt_field_and_an_unknown_corruption():
    base = {"model_name": "pepnet", "seed": 0, "epochs": 2, "patience": 1,
            "model": {"name": "pepnet", "role": "unified", "model": "m.M", "config": "m.C"}}
    config = KerasTrainerConfig.from_custom_config(base)
    assert config.model.outputs == {"serving_default": ("click", "conversion", "cart")}
    with pytest.raises(ConfigError, match="unknown KerasTrainerConfig .custom_config. field.*'patiense'"):
        KerasTrainerConfig.from_custom_config({**base, "patiense": 3})
    with pytest.raises(ConfigError, match="corrupt_labels='flip'"):
        KerasTrainerConfig.from_custom_config({**base, "corrupt_labels": "flip"})
    # TFX's Vertex AI trainer hands the replicas its own keys beside ours
    vertex = {"ai_platform_enable_vertex": True, "ai_platform_training_args": {"project": "p"}}
    assert KerasTrainerConfig.from_custom_config({**base, **vertex}) == config
    with pytest.raises(ConfigError, match="missing field.*'epochs'"):
        KerasTrainerConfig.from_custom_config({k: v for k, v in base.items() if k != "epochs"})
    assert set(CORRUPTIONS) == set(config_module.CORRUPTIONS)


def test_an_epoch_is_a_pass_over_the_train_rows_within_both_caps():
    assert epoch_steps(rows=10_000, batch=500, train_steps=600, max_epochs=6) == (20, 6)  # 6 passes
    assert epoch_steps(rows=10_000, batch=500, train_steps=50, max_epochs=6) == (20, 2)  # the steps cap: 2 passes
    assert epoch_steps(rows=10_000, batch=500, train_steps=8, max_epochs=6) == (8, 1)  # less than a pass
    assert epoch_steps(rows=100, batch=500, train_steps=600, max_epochs=6) == (1, 6)  # fewer rows than a batch


def test_rows_are_counted_over_one_pass_of_batches():
    ds = tf.data.Dataset.from_tensor_slices({"click": np.zeros(1001), "user_id": np.arange(1001)}).batch(100)
    assert count_rows(ds) == 1001
    kept = only_scenarios(tf.data.Dataset.from_tensor_slices({"scenario_id": np.array([1, 2, 1] * 5)}).batch(4),
                          [1], batch_size=4, drop_remainder=False)
    assert count_rows(kept) == 10
