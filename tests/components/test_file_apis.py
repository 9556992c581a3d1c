"""No builtin file API on artifact paths: executors and trainers go through fileio / tf.io.gfile.

An artifact URI on Vertex AI or Kubeflow is a bucket path (gs://...), which `open`,
`os.path`, `glob` and `shutil` cannot see. A line that really handles a local path
says so with a `# local-path: <why>` comment and is allowed.
"""

import ast
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCOPE = ("components/**/*.py", "models/*_trainer.py", "trainers/knowledge_center.py", "models/multitask.py",
         "models/export.py", "trainers/transformed_data.py", "models/keep_cache.py", "models/keep_plugin.py",
         "schemas/scenarios.py")
# (module, attribute) pairs, or a bare builtin name, that only work on the local filesystem
FORBIDDEN = {
    ("os", "listdir"), ("os", "makedirs"), ("os", "mkdir"), ("os", "remove"), ("os", "unlink"), ("os", "rename"),
    ("os", "replace"), ("os", "walk"), ("os", "scandir"), ("os", "stat"), ("os", "rmdir"),
    ("os.path", "exists"), ("os.path", "isfile"), ("os.path", "isdir"), ("os.path", "getsize"),
    ("os.path", "getmtime"), ("os.path", "normpath"), ("os.path", "abspath"), ("os.path", "realpath"),
    ("glob", "glob"), ("glob", "iglob"), ("np", "save"), ("np", "savez"), ("np", "savez_compressed"), ("np", "load"),
    ("pathlib", "Path"),
}
FORBIDDEN_MODULES = {"shutil"}
FORBIDDEN_BUILTINS = {"open"}
ALLOW = "# local-path:"


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _in_memory(arg) -> bool:
    """A numpy save/load on a buffer (a variable, or io.BytesIO(...)), not on a path."""
    if isinstance(arg, ast.Name):
        return True
    return isinstance(arg, ast.Call) and (_dotted(arg.func) or "").endswith("BytesIO")


def builtin_file_calls(source: str):
    """[(line, call)] of local-only file API calls in a module's source."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        module, _, attr = name.rpartition(".")
        bad = (name in FORBIDDEN_BUILTINS and not module) or (module, attr) in FORBIDDEN \
            or module.split(".")[0] in FORBIDDEN_MODULES
        if bad and module == "np" and node.args and _in_memory(node.args[0]):
            bad = False
        if bad and ALLOW not in lines[node.lineno - 1]:
            found.append((node.lineno, name))
    return found


def test_the_check_finds_each_kind_of_local_call():
    source = "\n".join([
        "import os, glob, shutil", "open('x')", "os.path.exists('x')", "glob.glob('x')", "shutil.rmtree('x')",
        "os.listdir('x')", "open('y')  # local-path: a temp file", "fileio.open('x')", "f.open()",
        "np.savez(buffer, a=1)", "np.load(io.BytesIO(b))", "np.savez('x.npz', a=1)"])
    assert builtin_file_calls(source) == [(2, "open"), (3, "os.path.exists"), (4, "glob.glob"),
                                          (5, "shutil.rmtree"), (6, "os.listdir"), (12, "np.savez")]


def test_executors_and_trainers_use_no_builtin_file_api():
    offenders = []
    for pattern in SCOPE:
        for path in sorted(glob.glob(os.path.join(REPO, pattern), recursive=True)):
            with open(path) as f:
                for line, call in builtin_file_calls(f.read()):
                    offenders.append(f"{os.path.relpath(path, REPO)}:{line}: {call}")
    assert not offenders, "use tfx.dsl.io.fileio / tf.io.gfile (models/artifact_io.py):\n" + "\n".join(offenders)
