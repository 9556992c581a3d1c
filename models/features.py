"""Transformed features: the contract between `models/preprocessing.py` and every model.

Conventions of the transformed examples:
* every id (string or small integer) becomes an int64 index >= 0; index 0 means
  "absent" (an empty cell, or padding in a sequence); vocabulary entries start at 1
  and the last `OOV_BUCKETS` indices catch values unseen when the vocabulary was built;
* behaviour sequences become [SEQUENCE_LENGTH] int64 index vectors, 0-padded;
* numeric features become float z-scores of log1p(value), 0.0 where absent;
* labels stay 0/1 floats under their raw names.
"""

from typing import Dict

from schemas import contract

SEQUENCE_LENGTH = 20
OOV_BUCKETS = 10
# Vocabulary file of each id feature; sequences share their target's vocabulary, so
# a history item and a candidate item have the same index.
VOCABULARY = {
    "user_id": "user_id",
    "item_id": "item_id",
    "category_id": "category_id",
    "shop_id": "shop_id",
    "scenario_id": "scenario_id",
    "user_gender": "user_gender",
    "pay_channel": "pay_channel",
    "live_room_id": "live_room_id",
    "device_type": "device_type",
    "hist_item_ids": "item_id",
    "hist_category_ids": "category_id",
}
# Small integer categoricals: index = value + 1 (0 = absent); values outside the
# schema's domain are clipped to it.
INTEGER_CATEGORICAL_MAX = {"user_age_bucket": 6, "hour": 23, "member_level": 4}

CATEGORICAL_FEATURES = contract.CATEGORICAL_FEATURES
INTEGER_CATEGORICAL_FEATURES = contract.INTEGER_CATEGORICAL_FEATURES
NUMERIC_FEATURES = contract.NUMERIC_FEATURES
SEQUENCE_FEATURES = tuple(contract.SEQUENCE_FEATURES)
LABELS = contract.LABELS
ORACLE_COLUMNS = contract.ORACLE_COLUMNS
# Per-scenario exposure counts (z-scored log1p) of the user and the item: domain statistics.
DOMAIN_STATISTICS = ("user_scenario_exposures", "item_scenario_exposures")
# Float inputs a model reads as they are (z-scored by the transform), not embedded.
DENSE_FEATURES = tuple(NUMERIC_FEATURES) + DOMAIN_STATISTICS
# A hash of session_id, for the pairwise loss's "same session" pairs (training only).
SESSION_KEY = "session_key"
DAY = "day"


def integer_vocab_size(name: str) -> int:
    return INTEGER_CATEGORICAL_MAX[name] + 2


def vocab_size(tf_transform_output, name: str) -> int:
    """Embedding-table size of an id feature: vocabulary + absent (0) + OOV buckets."""
    if name in INTEGER_CATEGORICAL_MAX:
        return integer_vocab_size(name)
    return tf_transform_output.vocabulary_size_by_name(VOCABULARY[name]) + 1 + OOV_BUCKETS


def scenario_indices(tf_transform_output, scenario_ids) -> Dict[str, int]:
    """Transformed index of every scenario id (vocabulary position + 1, as models/preprocessing does)."""
    vocab = [v.decode() if isinstance(v, bytes) else v
             for v in tf_transform_output.vocabulary_by_name(VOCABULARY["scenario_id"])]
    missing = [s for s in scenario_ids if s not in vocab]
    if missing:
        raise ValueError(f"scenario(s) {missing} of scenarios.csv have no rows in the training data")
    return {s: vocab.index(s) + 1 for s in scenario_ids}

# Id features only some (heterogeneous) scenarios carry.
SCENARIO_SPECIFIC_ID_FEATURES = tuple(
    n for n in contract.SCENARIO_SPECIFIC_FEATURES if n not in contract.NUMERIC_FEATURES
)
