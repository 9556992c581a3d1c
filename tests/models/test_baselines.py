import numpy as np
import pytest
import tf_keras

from models.baselines import BaselineConfig, build_baseline
from tests.models.test_samd import VOCAB, features


@pytest.mark.parametrize("name", ["shared_bottom", "mmoe"])
def test_baselines_predict_every_task_and_learn(name):
    model = build_baseline(name, BaselineConfig(bottom_units=(16,), tower_units=(8,), embedding_dim=4), VOCAB)
    model.compile(optimizer=tf_keras.optimizers.Adam(0.02))
    data = features(0)
    out = model(data)
    for task in ("click", "conversion", "cart"):
        assert out[task].shape == (6,) and np.all((out[task].numpy() > 0) & (out[task].numpy() < 1))
    first = float(model.compute_losses(data, out))
    for _ in range(20):
        logs = model.train_step(data)
    assert float(model.compute_losses(data, model(data))) < first
    assert set(logs) == {"loss", "auc_click", "auc_conversion", "auc_cart"}
    clone = type(model).from_config(model.get_config())
    assert clone.config == model.config


def test_unknown_baseline_and_config_field():
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("wide_and_deep", BaselineConfig(), VOCAB)
    with pytest.raises(ValueError, match="unknown BaselineConfig field"):
        BaselineConfig.from_dict({"experts": 3})
