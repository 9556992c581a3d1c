import dataclasses
import json
from typing import Any, Dict, Literal, Optional, Tuple

import pytest

from models.configs import ConfigError, FromDict, config_from_dict


@dataclasses.dataclass(frozen=True)
class _Config:
    units: Tuple[int, ...] = (4, 2)
    pairs: Tuple[Tuple[str, str], ...] = (("a", "b"),)
    rate: float = 0.1


def test_json_lists_become_the_declared_tuples_and_scalars_pass_through():
    c = config_from_dict(_Config, {"units": [8], "pairs": [["x", "y"], ["y", "z"]], "rate": 0.5})
    assert c == _Config(units=(8,), pairs=(("x", "y"), ("y", "z")), rate=0.5)
    assert hash(c)  # frozen and hashable: no list left inside
    assert config_from_dict(_Config, None) == _Config()


def test_an_unknown_field_is_named():
    with pytest.raises(ValueError, match=r"unknown _Config field\(s\): \['unit'\]"):
        config_from_dict(_Config, {"unit": [8]})


@dataclasses.dataclass(frozen=True)
class _Inner(FromDict):
    kind: Literal["a", "b"] = "a"
    width: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class _Outer(FromDict):
    name: str
    inner: _Inner = _Inner()
    flags: Dict[str, bool] = dataclasses.field(default_factory=dict)
    steps: int = dataclasses.field(default=1, metadata={"minimum": 1})
    rate: float = 0.5
    keep: Dict[str, Any] = dataclasses.field(default_factory=dict, metadata={"overrides": _Config})


def test_values_are_converted_to_their_declared_types_nested_configs_included():
    c = _Outer.from_dict({"name": "x", "inner": {"kind": "b", "width": 3}, "flags": {"f": True}, "rate": 1,
                          "keep": {"units": [1]}})
    assert c == _Outer("x", _Inner("b", 3), {"f": True}, 1, 1.0, {"units": [1]})
    assert isinstance(c.rate, float)
    assert _Outer.from_dict({"name": "x", "inner": {"width": None}}).inner == _Inner()


@pytest.mark.parametrize("data, message", [
    ({"name": 3}, r"_Outer.name=3: expected string"),
    ({"name": "x", "inner": {"kind": "c"}}, r"_Outer.inner.kind='c': expected one of \"a\", \"b\""),
    ({"name": "x", "inner": {"width": 1.5}}, r"_Outer.inner.width=1.5: expected integer or null"),
    ({"name": "x", "inner": {"wide": 1}}, r"unknown _Outer.inner field\(s\): \['wide'\]; allowed: \['kind', 'width'\]"),
    ({"name": "x", "inner": [1]}, r"_Outer.inner=\[1\]: expected object of _Inner fields"),
    ({"name": "x", "flags": {"f": 1}}, r"_Outer.flags.f=1: expected boolean"),  # 1 is no boolean
    ({"name": "x", "steps": True}, r"_Outer.steps=True: expected integer"),  # nor True an integer
    ({"name": "x", "steps": 0}, r"_Outer.steps=0: expected at least 1"),
    ({"name": "x", "keep": {"unit": [1]}}, r"unknown _Outer.keep field\(s\): \['unit'\]"),
    ({"name": "x", "keep": {"units": ["a"]}}, r"_Outer.keep.units\[0\]='a': expected integer"),
    ({}, r"_Outer: missing field\(s\) \['name'\]"),
])
def test_a_bad_value_is_named_with_what_is_allowed(data, message):
    with pytest.raises(ConfigError, match=message):
        _Outer.from_dict(data)


def test_where_names_the_config_in_messages():
    with pytest.raises(ConfigError, match=r"KEEP_SAMD_X.inner.kind='c'"):
        _Outer.from_dict({"name": "x", "inner": {"kind": "c"}}, "KEEP_SAMD_X")


def test_every_config_dataclass_loads_its_own_json_through_the_one_loader():
    from components.model_evaluator.blessing import BlessingConfig
    from components.time_split_example_gen.split import TimeSplit
    from models.adl import ADLConfig
    from models.baselines import BaselineConfig
    from models.grec import GRecConfig
    from models.keep import KeepConfig
    from models.keep_cache import CacheableKnowledgeConfig
    from models.keep_plugin import DownstreamConfig
    from models.linear import LinearConfig
    from models.pepnet import PEPNetConfig
    from models.samd import SamdConfig

    for cls in (ADLConfig, BaselineConfig, GRecConfig, KeepConfig, CacheableKnowledgeConfig, DownstreamConfig,
                LinearConfig, PEPNetConfig, SamdConfig, BlessingConfig, TimeSplit):
        assert "from_dict" not in vars(cls), f"{cls.__name__} has its own from_dict"
        config = cls()
        assert cls.from_dict(json.loads(json.dumps(dataclasses.asdict(config)))) == config
