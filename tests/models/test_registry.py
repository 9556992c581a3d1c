"""The model registry: one entry per model, what it builds, and its mistakes named."""

import pytest

from models import registry
from models.configs import ConfigError


def test_the_registry_holds_each_role_and_the_unified_models_in_order():
    assert registry.with_role("general").name == "keep_general"
    assert registry.with_role("samd").name == "samd"
    assert registry.with_role("downstream").name == "keep_downstream"
    assert registry.names("unified") == ("pepnet", "adl", "grec", "shared_bottom", "mmoe", "logistic_regression")
    assert registry.names()[0] == "keep_general" and registry.names()[-1] == "keep_downstream"


def test_an_entry_builds_its_model_with_overrides_and_names_a_bad_one():
    from models import features as F

    vocab = {n: 10 for n in (*F.VOCABULARY, *F.INTEGER_CATEGORICAL_MAX)}
    model, config = registry.get("logistic_regression").build({"cross_buckets": 128}, vocab)
    assert config.cross_buckets == 128 and type(model).__name__ == "LogisticRegressionModel"
    with pytest.raises(ConfigError, match="logistic_regression config.*'no_such_field'"):
        registry.get("logistic_regression").build({"no_such_field": 1}, vocab)


def test_an_unknown_model_or_a_second_entry_of_a_name_is_refused():
    with pytest.raises(ValueError, match="unknown model 'dcn'.*registered"):
        registry.get("dcn")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.ModelEntry("pepnet", "unified", "m.M", "m.C"))
    with pytest.raises(ValueError, match="names its `model` and `config`"):
        registry.ModelEntry("toy", "unified")


def test_an_entry_survives_json_as_a_trainer_config_carries_it():
    import dataclasses
    import json

    entry = registry.get("adl")
    back = registry.ModelEntry.from_dict(json.loads(json.dumps(dataclasses.asdict(entry))))
    assert back == entry and back.outputs == {"serving_default": ("click", "conversion", "cart"),
                                              "routing": ("cluster",)}
    assert registry.get("shared_bottom").title == "SharedBottom" and registry.get("keep_general").title == "Keep"
