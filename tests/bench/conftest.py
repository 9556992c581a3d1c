"""What the bench smoke tests share: one tiny pipeline run, made by bench.quality itself.

bench.quality trains on an imported Transform (the session's `transformed`), so that run
is quality's own smoke test, and its output is the "finished pipeline run" that
keep_plugin, samd, unified, serving and adl's sweep-k read.
"""

import json
import os
import pathlib

import pytest

from tests.conftest import once_per_session

# The students of one scenario only: SAMD's trainer spends ~25 s per student (tracing, export).
SAMD_SCENARIO = "banner"
# Cheapest of each: KEEP and the floor always train; samd and keep_downstream for
# keep_plugin and samd; adl for adl's sweep-k (it reads adl's row of a quality table).
RUN_MODELS = ("samd", "keep_downstream", "adl")
# One epoch each: every epoch ends with a validation pass.
RUN_OPTIONS = {"epochs": 1, "samd": {"scenarios": [SAMD_SCENARIO], "epochs": 1}, "downstream": {"epochs": 1}}


def transform_base(transformed, folder) -> str:
    """A bench.quality --base for the `transformed` fixture: <base>/data and <base>/transform (linked)."""
    data, result = transformed
    base = pathlib.Path(folder) / "base"
    base.mkdir(exist_ok=True)
    for name, target in (("data", data), ("transform", pathlib.Path(result.transformed_examples).parents[3])):
        if not (base / name).exists():
            (base / name).symlink_to(target)
    return str(base)


@pytest.fixture(scope="session")
def bench_run(transformed, tmp_path_factory):
    """{base, data, workdir, run, quality}: bench.quality's run of seed 0 (1 step per trainer) on the
    `transformed` data, and the table it wrote (`quality`). Built once per session, also under xdist."""
    from bench import quality

    def build(folder):
        base = transform_base(transformed, folder)
        workdir, output = os.path.join(folder, "quality"), os.path.join(folder, "quality.json")
        assert quality.main(["--seeds", "0", "--base", base, "--workdir", workdir, "--train-steps", "1",
                             "--samd-steps", "1", "--models", *RUN_MODELS, "--baselines", "adl",
                             "--options", json.dumps(RUN_OPTIONS),
                             "--output", output]) == 0
        run = os.path.join(workdir, "seed0")
        # The run imported ExampleGen's and Transform's output; keep_plugin, unified and serving
        # read them where a pipeline run of its own has them.
        root = os.path.join(run, "pipelines", "keep_samd")
        for component in ("CsvExampleGen", "Transform"):
            os.symlink(os.path.join(base, "transform", "root", component), os.path.join(root, component))
        return {"base": base, "data": os.path.join(base, "data"), "workdir": workdir, "run": run, "quality": output}

    return once_per_session(tmp_path_factory, "bench_run", build)
