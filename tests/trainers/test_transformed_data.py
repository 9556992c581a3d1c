"""load_transformed: columns and row filters applied while reading, the same rows as filtering afterwards."""

import os

import numpy as np
import pytest

from models import features as F
from trainers.transformed_data import load_transformed


@pytest.fixture(scope="module")
def loaded(transformed):
    import tensorflow_transform as tft

    _, t = transformed
    tft_output = tft.TFTransformOutput(t.transform_graph)
    pattern = os.path.join(t.transformed_examples, "Split-train", "*")
    return pattern, tft_output, load_transformed(pattern, tft_output)


def test_columns_and_where_keep_exactly_the_rows_and_features_asked_for(loaded):
    pattern, tft_output, everything = loaded
    first = everything["scenario_id"][0]
    wanted = (everything["scenario_id"] == first) & (everything[F.DAY] > everything[F.DAY].min())
    assert 0 < wanted.sum() < len(wanted)
    part = load_transformed(pattern, tft_output, columns=["scenario_id", F.DAY, "click"],
                            where=lambda b: (b["scenario_id"] == first) & (b[F.DAY] > everything[F.DAY].min()))
    assert sorted(part) == sorted(["scenario_id", F.DAY, "click"])
    for k in part:
        np.testing.assert_array_equal(part[k], everything[k][wanted])


def test_a_filter_that_keeps_nothing_gives_empty_arrays_and_an_unknown_column_is_named(loaded):
    pattern, tft_output, everything = loaded
    none = load_transformed(pattern, tft_output, columns=["click", "hist_item_ids"],
                            where=lambda b: np.zeros(len(b["click"]), bool))
    assert none["click"].shape == (0,) + everything["click"].shape[1:]
    assert none["hist_item_ids"].shape == (0,) + everything["hist_item_ids"].shape[1:]
    with pytest.raises(KeyError, match=r"no transformed feature\(s\) \['nope'\]"):
        load_transformed(pattern, tft_output, columns=["nope"])
