import os

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from schemas import contract

SCHEMA = os.path.join(os.path.dirname(contract.__file__), "schema.pbtxt")


def load():
    with open(SCHEMA) as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def test_schema_lists_exactly_the_contract_columns():
    schema = load()
    assert [f.name for f in schema.feature] == list(contract.RAW_COLUMNS)


def test_types_presence_and_environments():
    features = {f.name: f for f in load().feature}
    for name in contract.LABELS + ("day", "user_age_bucket", "hour", "member_level"):
        assert features[name].type == schema_pb2.INT, name
    for name in contract.NUMERIC_FEATURES + contract.ORACLE_COLUMNS:
        assert features[name].type == schema_pb2.FLOAT, name
    for name in contract.REQUIRED_COLUMNS:
        assert features[name].presence.min_fraction == 1.0, name
    for name in contract.SCENARIO_SPECIFIC_FEATURES:
        assert features[name].presence.min_fraction == 0.0, name
    for name in contract.LABELS + contract.ORACLE_COLUMNS:
        assert "SERVING" in features[name].not_in_environment, name
    for name in contract.ORACLE_COLUMNS:
        assert "not_a_feature" in features[name].annotation.tag
    for name in contract.MODEL_FEATURES:
        assert "SERVING" not in features[name].not_in_environment, name
    for name in contract.LABELS:
        assert (features[name].int_domain.min, features[name].int_domain.max) == (0, 1)
