import dataclasses
from typing import Tuple

import pytest

from models.configs import config_from_dict


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
