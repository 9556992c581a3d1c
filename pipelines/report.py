"""Prints the evaluation report of the latest keep_samd run (and where its files are).

    python -m pipelines.report [--output runs] [--format text|markdown]

The report is written by the pipeline's EvaluationReport step, under
<output>/pipelines/keep_samd/EvaluationReport/report/<execution>/.
"""

import argparse
import glob
import os
import sys

from pipelines.options import PIPELINE_NAME


def latest_report_dir(output_dir: str) -> str:
    pattern = os.path.join(output_dir, "pipelines", PIPELINE_NAME, "EvaluationReport", "report", "*")
    done = [d for d in glob.glob(pattern) if os.path.basename(d).isdigit()
            and os.path.isfile(os.path.join(d, "metrics.json"))]
    if not done:
        raise FileNotFoundError(f"{output_dir}: no finished keep_samd run with an evaluation report "
                                f"(looked for {pattern}/metrics.json)")
    return max(done, key=lambda d: int(os.path.basename(d)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default=os.environ.get("KEEP_SAMD_OUTPUT", "runs"))
    p.add_argument("--format", choices=("text", "markdown"), default="text")
    a = p.parse_args(argv)
    try:
        folder = latest_report_dir(a.output)
    except FileNotFoundError as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    with open(os.path.join(folder, "report.txt" if a.format == "text" else "report.md")) as f:
        print(f.read())
    print(f"files (HTML, PNG plots, metrics.json): {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
