"""ModelEvaluator: metrics per scenario and task on the eval split, and the blessing that gates pushing."""
