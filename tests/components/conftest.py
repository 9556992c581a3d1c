import os
import shutil

import pytest

from tests.components import to_ram


@pytest.fixture(scope="session")
def ram_transformed(transformed, tmp_path_factory):
    """The `transformed` fixture's artifacts copied to ram:// (a non-local filesystem), and its scenario table."""
    data, t = transformed
    table = tmp_path_factory.mktemp("scenario_table")
    shutil.copy(os.path.join(data, "scenarios.csv"), table / "scenarios.csv")
    return {"examples": to_ram(t.transformed_examples), "graph": to_ram(t.transform_graph),
            "scenarios": to_ram(str(table)), "local": t}
