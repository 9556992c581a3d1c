"""bench.floor: scikit-learn's logistic regression on the floor's features, C picked on validation."""

import json

import numpy as np
import pytest

from tests.bench.conftest import transform_base


def test_floor_reference_picks_c_on_validation_and_scores_the_test_split(transformed, tmp_path):
    from bench import floor

    base = transform_base(transformed, tmp_path)
    output = tmp_path / "floor.json"
    assert floor.main(["--base", base, "--Cs", "0.01", "1", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert set(result["tasks"]) == {"click", "conversion", "cart"}
    for task, fit in result["tasks"].items():
        curve = fit["validation_auc_by_C"]
        assert set(curve) == {"0.01", "1.0"}
        # The chosen C is the validation argmax, and its test AUC lies inside its interval.
        assert fit["C"] == float(max(curve, key=curve.get)) and fit["validation_auc"] == max(curve.values())
        low, high = fit["test_ci95"]
        assert 0 <= low <= fit["test_auc"] <= high <= 1, task
    # Conversion and cart are fitted over clicked rows only.
    assert result["tasks"]["conversion"]["test_rows"] == result["tasks"]["cart"]["test_rows"]
    assert result["tasks"]["conversion"]["test_rows"] < result["tasks"]["click"]["test_rows"]


def test_design_gives_unseen_ids_and_pairs_no_column():
    from bench.floor import design

    splits = {"train": {"a": np.array([1, 2, 2]), "b": np.array([5, 5, 6])},
              "validation": {"a": np.array([3]), "b": np.array([5])},
              "test": {"a": np.array([2]), "b": np.array([6])}}
    x = design(splits, ["a"], [("a", "b")])
    # columns: a in {1, 2}; pairs (1,5), (2,5), (2,6)
    assert x["train"].shape == (3, 5)
    np.testing.assert_array_equal(x["train"].toarray(), [[1, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 1, 0, 0, 1]])
    assert x["validation"].nnz == 0  # id 3 and pair (3, 5) were never met in the train days
    np.testing.assert_array_equal(x["test"].toarray(), [[0, 1, 0, 0, 1]])


def test_a_base_without_a_finished_transform_is_named_in_the_error(tmp_path):
    from bench import floor

    half = tmp_path / "base" / "transform" / "root" / "Transform" / "transformed_examples" / "3"
    half.mkdir(parents=True)  # a Transform that stopped before writing its test split
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'base' / 'transform'}: no finished Transform"):
        floor.load_splits(str(tmp_path / "base"))
