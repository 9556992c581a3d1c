"""Transformed examples of a small generated data set, for the trainers that read them (slow: one Transform run)."""

import os

import pytest


@pytest.fixture(scope="session")
def transformed(tmp_path_factory):
    from pipelines.transform_only import run_transform
    from synthetic import generate as G

    tmp = str(tmp_path_factory.mktemp("transformed"))
    data = os.path.join(tmp, "data")
    G.generate(data, G.GeneratorConfig(rows=4000, days=3, seed=11), progress=False)
    result = run_transform(data, tmp)
    return data, result
