import numpy as np
import tensorflow as tf

from trainers.keep import only_scenarios, read_roles


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
