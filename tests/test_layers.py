"""Data flows one way between the top-level packages: no upward import, so no circular one.

schemas -> models -> trainers -> components -> pipelines -> bench, with synthetic (the data generator)
and serving (never the models: an exported SavedModel is all it needs) beside them. Every
import counts, also one inside a function.
"""

import ast
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# package -> the top-level packages it may import (besides itself)
MAY_IMPORT = {
    "schemas": set(),
    "synthetic": {"schemas"},
    "models": {"schemas"},
    "serving": {"schemas"},
    "trainers": {"schemas", "models"},
    "components": {"schemas", "models", "trainers"},
    "pipelines": {"schemas", "synthetic", "models", "trainers", "components", "serving"},
    "bench": {"schemas", "synthetic", "models", "trainers", "components", "pipelines", "serving"},
}


def top_level_packages():
    return sorted(d for d in os.listdir(REPO)
                  if d != "tests" and os.path.isfile(os.path.join(REPO, d, "__init__.py")))


def imports(path):
    """(line, top-level name) of every absolute import in a Python file."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def upward_imports(package):
    """['file:line imports X'] of `package`'s imports of a top-level package it may not import."""
    found = []
    for folder, _, files in os.walk(os.path.join(REPO, package)):
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            for line, top in imports(path):
                if top in MAY_IMPORT and top != package and top not in MAY_IMPORT[package]:
                    found.append(f"{os.path.relpath(path, REPO)}:{line} imports {top}")
    return found


def test_every_top_level_package_has_a_place_in_the_flow():
    assert top_level_packages() == sorted(MAY_IMPORT)


def test_no_package_imports_one_above_it():
    found = [v for package in MAY_IMPORT for v in upward_imports(package)]
    assert found == [], "\n".join(found)


def test_the_declared_flow_has_no_cycle():
    order, pending = [], dict(MAY_IMPORT)
    while pending:
        ready = [p for p, deps in pending.items() if deps <= set(order)]
        assert ready, f"a cycle among {sorted(pending)}"
        order += ready
        pending = {p: d for p, d in pending.items() if p not in ready}


def test_an_upward_import_is_named_with_its_file_and_line(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "m.py").write_text("import os\n\n\ndef f():\n    from pipelines.options import X\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", str(tmp_path))
    assert upward_imports("models") == [os.path.join("models", "m.py") + ":5 imports pipelines"]
