"""serving.servable: the flat signature call answers as the public kwargs call does."""

import numpy as np
import pytest
import tensorflow as tf

from serving.servable import Servable
from tests.serving import examples, half_plus_two, saved_model, vocab_model


@pytest.mark.parametrize("build", [lambda: saved_model(0.3), lambda: vocab_model(0.5)],
                         ids=["variables", "lookup_table"])
def test_every_signature_has_a_flat_call_equal_to_the_kwargs_call(build):
    servable = Servable("m", 1, build())
    rows = tf.constant(examples(6))
    for sig in servable.signatures.values():
        assert sig.flat is not None, sig.name  # TF's private attributes are still there
        flat, kwargs = sig.flat({"examples": rows}), sig.fn(examples=rows)
        assert set(flat) == set(kwargs)
        for name in kwargs:
            np.testing.assert_array_equal(flat[name].numpy(), kwargs[name].numpy())


def test_a_tf1_model_tf_saved_model_load_refuses_loads_through_the_session_loader(tmp_path, monkeypatch):
    # TF Serving's saved_model_half_plus_three (a TF 1.0 graph) is such a model; here the refusal is forced.
    path = half_plus_two(str(tmp_path), tf1=True)
    direct = Servable("m", 123, path)
    assert direct._session is None

    def refuse(*args, **kwargs):
        raise ValueError("Shape must be rank 1 but is rank 0 for ParseExample")

    monkeypatch.setattr(tf.saved_model, "load", refuse)
    served = Servable("m", 123, path)
    assert served._session is not None
    assert set(served.signatures) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    x = np.array([[1.0], [4.0]], np.float32)
    np.testing.assert_array_equal(served.predict("", {"x": x})["y"], direct.predict("", {"x": x})["y"])
    # Fed as TF Serving's Session::Run feeds it: no shape check ([2] for a (None, 1) input).
    np.testing.assert_array_equal(served.predict("", {"x": x.reshape(-1)})["y"], [2.5, 4.0])
    served.close()
    direct.close()
