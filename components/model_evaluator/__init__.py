"""ModelEvaluator: metrics per scenario and task on the test split, and the blessing that gates pushing."""
