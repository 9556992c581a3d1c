"""One `from_dict` for the models' frozen config dataclasses.

JSON (pipeline options, saved Keras configs) gives lists where a config declares
tuples, and a misspelt field must be named rather than ignored.

Example:
    @dataclasses.dataclass(frozen=True)
    class MyConfig:
        units: Tuple[int, ...] = (64, 32)

        @classmethod
        def from_dict(cls, overrides=None):
            return config_from_dict(cls, overrides)
"""

import dataclasses
from typing import Mapping, Optional


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def config_from_dict(cls, overrides: Optional[Mapping] = None):
    """`cls(**overrides)`; unknown fields raise, lists become tuples where the field's default is a tuple."""
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {unknown}")
    for name, value in overrides.items():
        if isinstance(fields[name].default, tuple) and isinstance(value, (list, tuple)):
            overrides[name] = _tuples(value)
    return cls(**overrides)
