"""Input, output and parameter keys of this project's components.

TFX's standard keys (EXAMPLES_KEY, MODEL_KEY, ...) come from
`tfx.types.standard_component_specs`; these are the rest. The specs' dicts, the
executors and their tests all name a key through these, so a renamed key cannot
leave one of them behind. A module of its own, as each component.py imports its
executor: a key defined in component.py would be a circular import.
"""

# Artifacts.
BASELINE_EVALUATION_KEY = "baseline_evaluation"
FLOOR_EVALUATION_KEY = "floor_evaluation"
KNOWLEDGE_KEY = "knowledge"  # the KnowledgeCenter's cache (a Model)
REPORT_KEY = "report"
SCENARIO_TABLE_KEY = "scenario_table"
# RawDataCheck's scenario table output; ModelEvaluator's parameter of the scenarios to score.
SCENARIOS_KEY = "scenarios"
SIMILARITY_KEY = "similarity"
TEACHER_KEY = "teacher"
TRANSFER_REPORT_KEY = "transfer_report"
VERDICT_KEY = "verdict"

# Parameters.
ALPHA_KEY = "alpha"
BLESSING_CONFIG_KEY = "blessing_config"
DATA_ROOT_KEY = "data_root"
EVAL_STEPS_KEY = "eval_steps"
FLOOR_KEY = "floor"  # the floor model's name (ModelEvaluator)
INPUT_FINGERPRINT_KEY = "input_fingerprint"
MODEL_NAME_KEY = "model_name"
RELAIMPR_BASE_KEY = "relaimpr_base"
SERVING_DIR_KEY = "serving_dir"
SPANS_KEY = "spans"
TIME_SPLIT_KEY = "time_split"
TOP_G_KEY = "top_g"
TRAIN_STEPS_KEY = "train_steps"
VERSIONS_KEPT_KEY = "versions_kept"
