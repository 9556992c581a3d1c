"""EvaluationReport: the run's evaluations as one table, a Markdown/HTML report and PNG plots."""
