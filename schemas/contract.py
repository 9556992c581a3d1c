"""The raw data contract, in Python: the columns of an impression log and of scenarios.csv.

`schema.pbtxt` (the TensorFlow Metadata schema that ImportSchemaGen reads) is the
authority for types and presence; this module names the columns' roles so that the
generator, the raw-data check, the transform and the export agree. A test checks
that both say the same thing.

Impression logs: CSV files with a header row under `<data_root>/day=N/*.csv`, one
row per impression. An empty cell means "feature absent" (heterogeneous scenarios
leave the super scenario's features they lack empty, and the other way round).
"""

# Row keys: present in every row.
KEY_COLUMNS = ("user_id", "item_id", "scenario_id", "day", "session_id")

# Id-like categorical features (strings); embedded through a vocabulary.
CATEGORICAL_FEATURES = (
    "user_id",
    "item_id",
    "category_id",
    "shop_id",
    "scenario_id",
    "user_gender",
    "pay_channel",
    "live_room_id",
    "device_type",
)
# Small integer features treated as categories.
INTEGER_CATEGORICAL_FEATURES = ("user_age_bucket", "hour", "member_level")
# Numeric features; normalised in the transform.
NUMERIC_FEATURES = ("item_price", "coupon_amount", "watch_seconds")
# Behaviour sequences: space-separated ids, most recent first, possibly empty.
SEQUENCE_FEATURES = {"hist_item_ids": "item_id", "hist_category_ids": "category_id"}

# Features only some scenarios carry (the heterogeneous scenarios' own features).
SCENARIO_SPECIFIC_FEATURES = (
    "pay_channel",
    "coupon_amount",
    "member_level",
    "live_room_id",
    "watch_seconds",
    "device_type",
)

LABELS = ("click", "conversion", "cart")
# Ground-truth probabilities written by the synthetic generator: never features.
# p_click = P(click | impression); p_conversion and p_cart are conditional on a click,
# matching how the conversion and cart tasks are defined (over clicks).
ORACLE_COLUMNS = ("p_click", "p_conversion", "p_cart")

# Column order of the CSV files the generator writes (readers go by header name).
RAW_COLUMNS = (
    "user_id",
    "item_id",
    "category_id",
    "shop_id",
    "scenario_id",
    "day",
    "session_id",
    "hist_item_ids",
    "hist_category_ids",
    "user_age_bucket",
    "user_gender",
    "item_price",
    "hour",
    "pay_channel",
    "coupon_amount",
    "member_level",
    "live_room_id",
    "watch_seconds",
    "device_type",
) + LABELS + ORACLE_COLUMNS

# Columns that must parse as numbers when present.
NUMERIC_COLUMNS = ("day",) + INTEGER_CATEGORICAL_FEATURES + NUMERIC_FEATURES + LABELS + ORACLE_COLUMNS
# Columns that must be present (non-empty) in every row.
REQUIRED_COLUMNS = KEY_COLUMNS + LABELS

# Everything a model may read (at training and at serving).
MODEL_FEATURES = (
    CATEGORICAL_FEATURES + INTEGER_CATEGORICAL_FEATURES + NUMERIC_FEATURES + tuple(SEQUENCE_FEATURES)
)

# scenarios.csv: one row per scenario.
SCENARIO_ROLES = ("super", "homogeneous", "heterogeneous", "minor")
SCENARIO_COLUMNS = ("scenario_id", "role", "exposure_position", "business_type", "item_family")
SCENARIO_ATTRIBUTES = ("exposure_position", "business_type", "item_family")
