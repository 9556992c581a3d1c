"""ScenarioSimilarity: Equation 3 grouped vs brute force, top-G, the Beam pass and the TFX component."""

import csv
import glob
import json
import os

import numpy as np
import pytest

from components.scenario_similarity import beam_pipeline as B
from components.scenario_similarity import similarity as S
from synthetic import generate as G

BEAM_ARGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sim") / "data")
    G.generate(root, G.GeneratorConfig(rows=3000, days=3), progress=False)
    with open(os.path.join(root, "scenarios.csv")) as f:
        scenarios = [r["scenario_id"] for r in csv.DictReader(f)]
    files = sorted(glob.glob(os.path.join(root, "day=*", "*.csv")))
    pairs = []
    for path in files:  # the csv module, independent of the Arrow reader under test
        with open(path, newline="") as f:
            pairs += [(r["user_id"], r["scenario_id"]) for r in csv.DictReader(f)]
    return root, scenarios, files, S.user_scenario_sets(pairs)


def _random_users(seed, users=60, scenarios=5):
    rng = np.random.default_rng(seed)
    names = [f"s{k}" for k in range(scenarios)]
    pairs = [(u, names[k]) for u in range(users) for k in range(scenarios) if rng.random() < 0.35]
    pairs += [(u, names[rng.integers(scenarios)]) for u in range(users)]  # nobody without a scenario
    return names, pairs


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 5.0])
def test_grouped_equals_brute_force(seed, alpha):
    names, pairs = _random_users(seed)
    pairs += pairs[:20]  # repeated rows change nothing
    brute = S.brute_force_similarity(S.user_scenario_sets(pairs), names, alpha)
    grouped = S.grouped_similarity(S.scenario_sets_from_pairs(pairs), names, alpha)
    np.testing.assert_allclose(grouped, brute, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(grouped, grouped.T, rtol=1e-12)


def test_u_equals_v_pairs_are_included():
    # One user who visited a and b: the only term is u = v, w_u^2 / (alpha + 2) = 1/2 / 3.
    sim = S.grouped_similarity({("a", "b"): 1}, ["a", "b", "c"], alpha=1.0)
    assert sim[0, 1] == pytest.approx(1 / 6) and sim[0, 0] == pytest.approx(1 / 6)
    assert sim[2].tolist() == [0, 0, 0]


def test_grouped_rejects_sets_outside_the_scenario_list():
    with pytest.raises(ValueError, match=r"\['x'\] are not in the scenario list"):
        S.grouped_similarity({("a", "x"): 3}, ["a", "b"])


def test_top_g_hand_made():
    sim = np.array([
        [9.0, 1.0, 3.0, 3.0],
        [1.0, 9.0, 0.5, 2.0],
        [3.0, 0.5, 9.0, 0.0],
        [3.0, 2.0, 0.0, 9.0],
    ])
    # 0: 2 and 3 tie at 3.0 -> the one listed first (2); the diagonal (9) is never taken.
    assert S.top_g(sim, 2) == [[2, 3], [3, 0], [0, 1], [0, 1]]
    assert S.top_g(sim, 1) == [[2], [3], [0], [0]]
    assert S.top_g(sim, 10) == [[2, 3, 1], [3, 0, 2], [0, 1, 3], [0, 1, 2]]  # at most N-1
    assert S.top_g(np.zeros((3, 3)), 2) == [[1, 2], [0, 2], [0, 1]]  # all tied: scenario order


def test_or_per_user_combine_is_exact():
    users = np.array([b"u1", b"u22", b"u1", b"u333", b"u22", b"u1"])
    masks = B.bit_table(3)[[0, 1, 2, 0, 1, 1]]
    fn = B.OrPerUserCombineFn()
    # One batch holding users several times, then a batch from another file with a wider id dtype.
    acc = fn.add_input(fn.create_accumulator(), (users, masks))
    assert dict(fn.extract_output(acc)) == {(7,): 1, (2,): 1, (1,): 1}  # u1: {0,1,2}, u22: {1}, u333: {0}
    more = (np.array([b"u1", b"u333"], dtype="S12"), B.bit_table(3)[[0, 2]])
    merged = fn.merge_accumulators([fn.compact([(users, masks)]), [more]])
    assert dict(fn.extract_output(merged)) == {(7,): 1, (2,): 1, (5,): 1}
    # The hash does not depend on the array's width, so a user meets itself across files.
    assert (B.user_hash(users.astype("S12")) == B.user_hash(users)).all()


def test_or_per_user_survives_hash_collisions(monkeypatch):
    monkeypatch.setattr(B, "user_hash", lambda users: np.zeros(len(users), np.uint64))
    users = np.array([b"a", b"b", b"a", b"c", b"b"])
    got_users, got_masks = B.or_per_user(users, B.bit_table(3)[[0, 1, 2, 2, 2]])
    assert dict(zip(got_users.tolist(), got_masks[:, 0].tolist())) == {b"a": 5, b"b": 6, b"c": 4}


def test_beam_csv_path_equals_brute_force(data, tmp_path):
    root, scenarios, files, user_sets = data
    doc = B.run("csv", files, scenarios, str(tmp_path / "out"), alpha=1.0, g=2, beam_args=BEAM_ARGS, num_buckets=4)
    brute = S.brute_force_similarity(user_sets, scenarios, 1.0)
    np.testing.assert_allclose(np.array(doc["matrix"]), brute, rtol=1e-9)
    assert doc["users"] == len(user_sets)
    assert doc["scenario_sets"] == len(set(user_sets.values()))
    assert doc["scenarios"] == scenarios and doc["alpha"] == 1.0
    expected = S.top_g(brute, 2)
    assert doc["top_g"] == {s: [scenarios[j] for j in expected[i]] for i, s in enumerate(scenarios)}
    with np.load(str(tmp_path / "out" / "similarity.npz")) as z:
        np.testing.assert_array_equal(z["matrix"], np.array(doc["matrix"]))
        assert z["scenarios"].tolist() == scenarios and int(z["set_users"].sum()) == len(user_sets)


def test_beam_names_the_file_and_line_of_an_unknown_scenario(data, tmp_path):
    _, scenarios, files, _ = data
    bad = tmp_path / "bad.csv"
    bad.write_text('user_id,scenario_id,day\n"u1","home_feed",0\n"u2","nowhere",0\n')
    with pytest.raises(Exception, match=r"bad.csv, line 3: scenario 'nowhere' is not in the scenario list"):
        B.run("csv", [str(bad)], scenarios, str(tmp_path / "out"), beam_args=BEAM_ARGS)


def test_same_latent_cluster_is_more_similar(data):
    root, scenarios, _, user_sets = data
    with open(os.path.join(root, "truth.json")) as f:
        cluster = {s["scenario_id"]: s["latent_cluster"] for s in json.load(f)["scenarios"]}
    counts = {}
    for s in user_sets.values():
        counts[s] = counts.get(s, 0) + 1
    sim = S.grouped_similarity(counts, scenarios, 1.0)
    d = np.sqrt(np.diag(sim))
    cos = sim / np.outer(d, d)  # cosine normalisation: big scenarios do not dominate
    keep = [i for i, s in enumerate(scenarios) if s != "home_feed"]  # the super scenario meets everyone
    same = [cos[i, j] for i in keep for j in keep if i < j and cluster[scenarios[i]] == cluster[scenarios[j]]]
    other = [cos[i, j] for i in keep for j in keep if i < j and cluster[scenarios[i]] != cluster[scenarios[j]]]
    assert np.mean(same) > 3 * np.mean(other), (np.mean(same), np.mean(other))
    for i in keep:
        mates = [j for j in keep if j != i and cluster[scenarios[j]] == cluster[scenarios[i]]]
        if mates:
            nearest = max((j for j in keep if j != i), key=lambda j: cos[i, j])
            assert nearest in mates, (scenarios[i], scenarios[nearest])


def test_component_in_a_local_pipeline_reads_the_train_days_only(data, tmp_path):
    from tfx import v1 as tfx

    from components.raw_data_check import RawDataCheck
    from components.scenario_similarity import ScenarioSimilarity
    from pipelines.options import example_gen as make_example_gen

    root, scenarios, files, _ = data
    pairs = []
    for path in [f for f in files if "day=0" in f]:  # the time split's train day (validation 1, test 2)
        with open(path, newline="") as f:
            pairs += [(r["user_id"], r["scenario_id"]) for r in csv.DictReader(f)]
    user_sets = S.user_scenario_sets(pairs)
    example_gen = make_example_gen(root)
    check = RawDataCheck(data_root=root)
    sim = ScenarioSimilarity(examples=example_gen.outputs["examples"], scenario_table=check.outputs["scenarios"],
                             alpha=0.5, top_g=2)
    pipeline_root = str(tmp_path / "root")
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="similarity_test",
        pipeline_root=pipeline_root,
        components=[check, example_gen, sim],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(tmp_path / "metadata.sqlite")),
        beam_pipeline_args=BEAM_ARGS,
    ))
    outputs = glob.glob(os.path.join(pipeline_root, "ScenarioSimilarity", "similarity", "*", "similarity.json"))
    assert len(outputs) == 1, outputs
    with open(outputs[0]) as f:
        doc = json.load(f)
    # Read back from the train split's tf.Examples, the matrix is the brute force's over day 0's raw CSVs.
    np.testing.assert_allclose(np.array(doc["matrix"]), S.brute_force_similarity(user_sets, scenarios, 0.5),
                               rtol=1e-9)
    assert doc["alpha"] == 0.5 and doc["users"] == len(user_sets)
    assert all(len(v) == 2 and s not in v for s, v in doc["top_g"].items())
    assert os.path.exists(os.path.join(os.path.dirname(outputs[0]), "similarity.npz"))
