"""serving.servable: the flat signature call answers as the public kwargs call does."""

import numpy as np
import pytest
import tensorflow as tf

from serving.servable import Servable
from tests.serving import examples, saved_model, vocab_model


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
