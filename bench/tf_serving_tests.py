"""Acceptance: TensorFlow Serving's own end-to-end test file against serving.model_server.

Runs `tensorflow_serving/model_servers/tensorflow_model_server_test.py`, unmodified, from
a tensorflow/serving checkout (or a bare git mirror, as the `fetch` tool brings; nothing
of it is committed here), with a shim in place of the `tensorflow_model_server` binary
that starts `python -m serving.model_server` with the same flags. Each test runs in a
process of its own (the file keeps one server per argument set for the whole process);
the table says which passed and, for each that did not, its last error line.

    .venv/bin/python -m bench.tf_serving_tests --serving /work/.mirror/tensorflow+serving/repo \\
        [--tests testGetModelStatus ...] [--timeout 300] [--output bench/results/tf_serving_tests.json]

The test file reads `$TEST_SRCDIR/tf_serving/tensorflow_serving/...` (a Bazel runfiles
tree): the harness builds that tree in a temporary folder from the checkout's
`model_servers/` and `servables/tensorflow/testdata/` and puts the shim at
`model_servers/tensorflow_model_server`. Files a mirror lacks (Git LFS objects) are
listed in the result; the tests that need them fail, naming the file.
"""

import argparse
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from bench import record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results", "tf_serving_tests.json")
TEST_FILE = "tensorflow_serving/model_servers/tensorflow_model_server_test.py"
TEST_CLASS = "TensorflowModelServerTest"
# What the test file reads from the checkout.
PREFIXES = ("tensorflow_serving/model_servers/", "tensorflow_serving/servables/tensorflow/testdata/")
# Every flag the test file passes reaches the server unchanged.
SHIM = """#!/bin/sh
# tensorflow_model_server -> serving.model_server (bench/tf_serving_tests.py).
cd {repo} && exec {python} -m serving.model_server --log_level=WARNING "$@"
"""


def _is_git_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "HEAD")) and os.path.isdir(os.path.join(path, "objects"))


def extract(serving: str, dest: str) -> List[str]:
    """Copies the files under PREFIXES from `serving` (a checkout, or a git dir: its HEAD) into `dest`;
    returns the paths a git dir lists but cannot read (LFS or absent objects)."""
    missing = []
    if _is_git_dir(serving):
        git = ["git", f"--git-dir={serving}"]
        names = subprocess.run(git + ["ls-tree", "-r", "--name-only", "HEAD", *PREFIXES], check=True,
                               capture_output=True, text=True).stdout.split()
        for name in names:
            blob = subprocess.run(git + ["cat-file", "blob", f"HEAD:{name}"], capture_output=True)
            if blob.returncode:
                missing.append(name)
                continue
            path = os.path.join(dest, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(blob.stdout)
    else:
        for prefix in PREFIXES:
            src = os.path.join(serving, prefix)
            if not os.path.isdir(src):
                raise FileNotFoundError(f"{serving}: no {prefix} (a tensorflow/serving checkout?)")
            shutil.copytree(src, os.path.join(dest, prefix), dirs_exist_ok=True)
    if not os.path.isfile(os.path.join(dest, TEST_FILE)):
        raise FileNotFoundError(f"{serving}: no {TEST_FILE}")
    return missing


def runfiles(serving: str, root: str, python: str = sys.executable) -> Dict[str, object]:
    """Builds $TEST_SRCDIR under `root`: the checkout's files and the shim. Returns {srcdir, missing}."""
    srcdir = os.path.join(root, "runfiles")
    tree = os.path.join(srcdir, "tf_serving")
    missing = extract(serving, tree)
    for package in ("tensorflow_serving", "tensorflow_serving/model_servers",
                    "tensorflow_serving/model_servers/test_util"):
        # Merged with the installed tensorflow-serving-api package (its apis/, config/).
        with open(os.path.join(tree, package, "__init__.py"), "w") as f:
            f.write("__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n")
    shim = os.path.join(tree, "tensorflow_serving", "model_servers", "tensorflow_model_server")
    with open(shim, "w") as f:
        f.write(SHIM.format(repo=REPO, python=python))
    os.chmod(shim, os.stat(shim).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {"srcdir": srcdir, "missing": missing}


def list_tests(test_file: str) -> List[str]:
    with open(test_file) as f:
        return re.findall(r"^  def (test\w+)\(self", f.read(), flags=re.M)


def last_error(output: str) -> str:
    """The most telling line of a failed unittest run: its exception, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [n for n, line in enumerate(lines) if re.match(r"^[\w.]*(Error|Exception|Failure)\b", line)]
    if not errors:
        return (lines or ["(no output)"])[-1][:300]
    text = lines[errors[-1]]
    details = [line for line in lines[errors[-1]:] if line.startswith(("status = ", "details = "))]
    return " ".join([text] + details[:2])[:300]  # a gRPC error's status and details follow its first line


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def run_one(srcdir: str, test: str, timeout: float, python: str = sys.executable) -> Dict[str, object]:
    """One test in a process of its own: {test, passed, seconds, error}."""
    tree = os.path.join(srcdir, "tf_serving")
    tmp = tempfile.mkdtemp(prefix=f"{test}-")
    env = dict(os.environ, TEST_SRCDIR=srcdir, TEST_TMPDIR=tmp, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2",
               TF_USE_LEGACY_KERAS="1")
    start = time.monotonic()
    try:
        # Its own process group: the servers it starts go with it on a timeout.
        proc = subprocess.Popen([python, os.path.join(tree, TEST_FILE), f"{TEST_CLASS}.{test}"], cwd=tmp, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            passed, error = proc.returncode == 0, None
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            output, _ = proc.communicate()
            passed, error = False, f"timed out after {timeout:.0f} s"
        if not passed and error is None:
            error = last_error(output)
    finally:
        _kill_group(proc.pid)  # a server the test left running
        shutil.rmtree(tmp, ignore_errors=True)
    return {"test": test, "passed": passed, "seconds": round(time.monotonic() - start, 1), "error": error}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serving", required=True, help="a tensorflow/serving checkout, or its git dir")
    p.add_argument("--tests", nargs="+", default=None, help="these tests only (default: all in the file)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per test")
    p.add_argument("--output", default=RESULTS)
    a = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="tf-serving-tests-")
    try:
        tree = runfiles(a.serving, root)
        tests = a.tests or list_tests(os.path.join(tree["srcdir"], "tf_serving", TEST_FILE))
        results = []
        for n, test in enumerate(tests, 1):
            r = run_one(tree["srcdir"], test, a.timeout)
            results.append(r)
            print(f"[{n}/{len(tests)}] {test}: {'pass' if r['passed'] else 'FAIL'} ({r['seconds']} s)"
                  + (f"  {r['error']}" if r["error"] else ""), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    passed = sum(r["passed"] for r in results)
    print(f"\n{passed} of {len(results)} passed")
    record.write(a.output, {
        "description": "TF Serving's own tensorflow_model_server_test.py, unmodified, against serving.model_server "
                       "through a shim; one test per process",
        "passed": passed, "tests": len(results), "results": results, "missing_files": tree["missing"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
