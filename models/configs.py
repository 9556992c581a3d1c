"""One typed `from_dict` for the frozen config dataclasses: the models', the blessing rule's,
the time split's and the pipeline options' (pipelines/options.py).

JSON (pipeline options, saved Keras configs) gives lists where a config declares
tuples, and a misspelt field or a value of the wrong type must be named where it is
read, not ignored or found an hour into a run. Values are checked against the
fields' type hints (int, float, bool, str, Literal, Optional, Tuple, Dict, nested
config dataclasses); the dataclass's own `__post_init__` checks the rest.

Field metadata the loader reads:
    minimum    the smallest value allowed (numbers)
    overrides  a config dataclass (or its "module.Class" path, imported when needed) the
               field's dict overrides: it is validated by constructing that config

Example:
    @dataclasses.dataclass(frozen=True)
    class MyConfig(FromDict):
        units: Tuple[int, ...] = (64, 32)

    MyConfig.from_dict({"units": [8]}) == MyConfig(units=(8,))
"""

import collections.abc
import dataclasses
import importlib
import json
import types
import typing
from typing import Any, Dict, Literal, Mapping, Optional, Union

_NONE = type(None)


class ConfigError(ValueError):
    """A config value is invalid: the message names the field, the value and what is allowed."""


def describe(hint) -> str:
    """What a type hint allows, in JSON's words (integer, list of string, object, ...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is tuple or hint is tuple:
        if args and args[-1] is Ellipsis:
            return f"list of {describe(args[0])}"
        return f"list of {len(args)}: " + ", ".join(describe(a) for a in args) if args else "list"
    if origin in (dict, collections.abc.Mapping) or hint in (dict, Dict, Mapping):
        return f"object of {describe(args[1])}" if args and args[1] is not Any else "object"
    if dataclasses.is_dataclass(hint):
        return f"object of {hint.__name__} fields"
    return {bool: "boolean", int: "integer", float: "number", str: "string", _NONE: "null",
            Any: "anything"}.get(hint, getattr(hint, "__name__", str(hint)))


def convert(hint, value, where: str):
    """`value` as the type `hint` declares (lists become tuples, objects nested configs); ConfigError if it is not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value

    def bad():
        return ConfigError(f"{where}={value!r}: expected {describe(hint)}")

    if origin in (Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        for option in (a for a in args if a is not _NONE):
            try:
                return convert(option, value, where)
            except ConfigError:
                pass
        raise bad()
    if origin is Literal:
        # `True in (1,)` holds in Python: compare types too.
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise bad()
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(hint, value, where)
        raise bad()
    if origin is tuple or hint is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        if not args:
            return tuple(value)
        if args[-1] is Ellipsis:
            return tuple(convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, collections.abc.Mapping) or hint in (dict, Dict, Mapping):
        if not isinstance(value, Mapping):
            raise bad()
        key_hint, value_hint = args or (Any, Any)
        return {convert(key_hint, k, where): convert(value_hint, v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad()
    return value  # a type the loader does not know: the dataclass checks it


def _config_class(spec):
    if isinstance(spec, str):
        module, _, name = spec.rpartition(".")
        return getattr(importlib.import_module(module), name)
    return spec


def convert_field(field: dataclasses.Field, hint, value, where: str):
    """One field's value, converted (`convert`) and checked against the field's metadata (see the module doc)."""
    value = convert(hint, value, where)
    minimum = field.metadata.get("minimum")
    if minimum is not None and value is not None and value < minimum:
        raise ConfigError(f"{where}={value!r}: expected at least {minimum}")
    if field.metadata.get("overrides") is not None and value:
        check_overrides(field.metadata["overrides"], value, where)
    return value


def check_overrides(config, overrides: Mapping, where: str) -> None:
    """Raises ConfigError unless `overrides` make a valid `config` (a config dataclass or its "module.Class" path)."""
    try:
        config_from_dict(_config_class(config), overrides, where)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # the config's own __post_init__ check
        raise ConfigError(f"{where}: {e}") from None


def convert_fields(cls, data: Optional[Mapping], where: Optional[str] = None) -> Dict[str, Any]:
    """`data`'s fields of the dataclass `cls`, converted and checked; unknown fields raise. Nothing is constructed."""
    where = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}={data!r}: expected {describe(cls)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown {where} field(s): {unknown}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return {name: convert_field(fields[name], hints.get(name, Any), value, f"{where}.{name}")
            for name, value in data.items()}


def config_from_dict(cls, data: Optional[Mapping] = None, where: Optional[str] = None):
    """`cls(**data)`, each value converted to its field's type; unknown, missing or ill-typed fields raise ConfigError.

    `where` names the config in messages (default: the class name), e.g. "KEEP_SAMD_SAMD".
    """
    kw = convert_fields(cls, data, where)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kw
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where or cls.__name__}: missing field(s) {missing}")
    return cls(**kw)


class FromDict:
    """Base of a config dataclass: `from_dict`, the one JSON-to-config loader (`config_from_dict`)."""

    @classmethod
    def from_dict(cls, data: Optional[Mapping] = None, where: Optional[str] = None):
        return config_from_dict(cls, data, where)


# ---- search spaces ---------------------------------------------------------------------------------------------
# What the Tuner searches (trainers/tuner.py): a model class's `SEARCH_SPACE`, {config field: LogRange or
# Choice}, next to its `CONFIG_CLASS`. Plain data here (no KerasTuner), so the space can be read and
# checked without TensorFlow; trainers/tuner.py declares it to KerasTuner.


@dataclasses.dataclass(frozen=True)
class LogRange:
    """A float searched on a log scale between `low` and `high`, both included."""

    low: float
    high: float

    def __post_init__(self):
        if not 0 < self.low < self.high:
            raise ValueError(f"LogRange({self.low}, {self.high}): expected 0 < low < high")

    def __contains__(self, value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


@dataclasses.dataclass(frozen=True, init=False)
class Choice:
    """One of `values`: numbers, strings or booleans of one type (what KerasTuner's Choice takes)."""

    values: tuple

    def __init__(self, *values):
        if not values or len({type(v) for v in values}) != 1 or not isinstance(values[0], (int, float, str, bool)):
            raise ValueError(f"Choice{values!r}: expected one or more values of one type: int, float, str or bool")
        object.__setattr__(self, "values", tuple(values))

    def __contains__(self, value) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)


def check_search_space(config, space: Mapping[str, Union[LogRange, Choice]], where: str) -> None:
    """Raises ValueError unless each name of `space` is a field of the config dataclass `config` whose
    default lies in its range (so the search can keep the default) and none is the batch, which the
    equal budgets fix."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    for name, values in space.items():
        if name not in fields or name == "batch_size":
            raise ValueError(f"{where}: {name!r} is not a searchable field of {config.__name__}")
        default = fields[name].default
        if default not in values:
            raise ValueError(f"{where}: {config.__name__}.{name}'s default {default!r} is outside its range {values}")


# The ranges every deep model searches: learning rate, embedding width and dropout around the defaults.
LEARNING_RATE = LogRange(1e-4, 1e-2)
EMBEDDING_DIM = Choice(8, 16, 32)
DROPOUT = Choice(0.0, 0.1, 0.2, 0.3)
