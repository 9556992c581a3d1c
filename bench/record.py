"""Writing a bench's results file under bench/results/.

`write` replaces the file with a run's result, with two additions the benchmarks page
(`python -m bench.render` -> docs/benchmarks.md) relies on:

* `command`: how to reproduce the figures; the command line of this process unless the
  bench recorded its own;
* `findings`: carried over from the file being replaced. They are added by hand, each
  with the command that measured it (an ablation run once, a prototype that was
  dropped), and no bench recomputes them, so a rerun must not drop them. Any other
  hand-written key (e.g. `notes` on how the old figures were measured) describes the
  old run and goes with it.
"""

import json
import os
import shlex
import sys

CARRIED = ("findings",)


def command_line(argv=None) -> str:
    """`.venv/bin/python -m <module> <args>` of this process (its script path when not run with -m)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = ["-m", spec.name] if spec is not None and spec.name else [os.path.relpath(sys.argv[0])]
    return shlex.join([".venv/bin/python", *program, *(sys.argv[1:] if argv is None else argv)])


def write(path: str, result: dict, command: str = None) -> dict:
    """Writes `result` (JSON) to `path` atomically, with `command` and the old file's findings; returns it."""
    out = dict(result)
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        for key in CARRIED:
            if key in before and key not in out:
                out[key] = before[key]
    out.setdefault("command", command or command_line())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, path)
    return out
