"""Typed settings: every dataclass config field is coerced or refused by its declared type.

``check_fields(obj, owner)`` is called first thing in the ``__post_init__`` of gapkit's config
dataclasses (``StudentSpec``, ``DataSpec``, ``TrainSpec``, ``DistillSpec``, ``LossWeights``,
``SyntheticTask``). It reads the field annotations and, for each value:

- ``bool``: only ``true``/``false``; never 0/1 or a string.
- ``int``: an int, or a float or numeric string with an integral value (``2.0``, ``"1e3"``), converted;
  ``2.5`` and bools are refused.
- ``float``: an int, a float or a numeric string (``"1e-3"``, ``"3.0e-5"``: YAML 1.1, hence PyYAML
  and ``--set``, reads exponents without a dot as strings), converted to float; bools are refused, and
  so are NaN and infinities (no gapkit setting means anything with them).
- ``str``: only strings (a number or a list is refused: quote it).
- ``list[str]``: a list of strings (a single string is accepted as a one-item list).
- ``dict``: a mapping.
- ``X | None``: None, or a value of type X.
- a config dataclass (``DataSpec`` inside ``DistillSpec`` ...): an instance, or a mapping of its
  settings, built with the field's dotted name in error messages.
- any other union (``StudentSpec | str``): a value of one of its types, as given.

Nothing is ever reinterpreted: a value is either converted to the same value in the declared type,
or refused with a :class:`gapkit.errors.ConfigError` that names the field, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping

from .errors import ConfigError

__all__ = ["check_fields", "coerce", "unknown_keys_message"]


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def check_fields(obj, owner: str, error: type[Exception] = ConfigError) -> None:
    """Coerce (in place) or refuse every init field of dataclass ``obj`` by its annotation.

    Args:
        obj: a dataclass instance, in its ``__post_init__``.
        owner: how messages name the fields' owner: ``"TrainSpec"`` gives ``TrainSpec.lr``.
        error: the exception class raised (a ConfigError by default; DataError for data settings).
    Raises:
        error: a value that does not fit its field's type, with the dotted name, value and fix.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if f.init:
            setattr(obj, f.name, coerce(getattr(obj, f.name), hints[f.name], f"{owner}.{f.name}", error))


def unknown_keys_message(where: str, unknown, known) -> str:
    """The one sentence for settings that a group does not have."""
    return (f"Unknown setting(s) {', '.join(f'{where}.{k}' for k in sorted(map(str, unknown)))}; "
            f"known settings of {where}: {', '.join(sorted(known))}.")


def _union_args(tp) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _number_text(value: str) -> float | None:
    try:
        return float(value.strip().replace("_", ""))
    except ValueError:
        return None


def coerce(value, tp, name: str, error: type[Exception] = ConfigError):
    """``value`` converted to type ``tp`` (see the module docstring), or ``error`` naming ``name``."""
    args = _union_args(tp)
    if args is not None:
        members = [a for a in args if a is not type(None)]
        if value is None:
            if len(members) < len(args):
                return None
            raise error(f"{name} must be set, got null.")
        if len(members) == 1:
            return coerce(value, members[0], name, error)
        for member in members:  # a union of several types: take the value as it is when it fits one
            if isinstance(value, typing.get_origin(member) or member):
                return value
        kinds = " or ".join(getattr(m, "__name__", str(m)) for m in members)
        raise error(f"{name} must be a {kinds}, got {value!r} ({type(value).__name__}).")

    if tp is bool:
        if isinstance(value, bool):
            return value
        raise error(f"{name} must be true or false, got {value!r}.")
    if tp is int:
        return _to_int(value, name, error)
    if tp is float:
        return _to_float(value, name, error)
    if tp is str:
        if isinstance(value, str):
            return value
        raise error(f"{name} must be a string, got {value!r} ({type(value).__name__}); "
                    f"write it in quotes if it is meant as text.")
    origin = typing.get_origin(tp)
    if tp is dict or origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise error(f"{name} must be a mapping of settings (e.g. {name.rsplit('.', 1)[-1]}: {{key: value}}), "
                    f"got {value!r}.")
    if tp is list or origin is list:
        (item,) = typing.get_args(tp) or (object,)
        if isinstance(value, str) and item is str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise error(f"{name} must be a list, got {value!r} ({type(value).__name__}).")
        if item is str and not all(isinstance(v, str) for v in value):
            raise error(f"{name} must be a list of strings, got {value!r}.")
        return list(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        short = name.rsplit(".", 1)[-1]
        if not isinstance(value, Mapping):
            example = {"train": "lr: 1e-4", "data": "task: sst2", "weights": "hard: 1.0",
                       "student": "layers: 3, hidden: 384"}.get(short, "key: value")
            raise error(f"{short} must be a mapping of settings (e.g. {short}: {{{example}}}), got {value!r}.")
        known = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = set(value) - known
        if unknown:
            raise error(unknown_keys_message(short, unknown, known))
        return tp(**value)
    return value  # an annotation this helper does not check (Any, callables ...)


def _to_float(value, name: str, error) -> float:
    if isinstance(value, bool):
        raise error(f"{name} must be a number, got {value!r}.")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and (parsed := _number_text(value)) is not None:
        number = parsed
    else:
        raise error(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(number):
        raise error(f"{name} must be a finite number, got {value!r}.")
    return number


def _to_int(value, name: str, error) -> int:
    if isinstance(value, bool):
        raise error(f"{name} must be an integer, got {value!r}.")
    if isinstance(value, int):
        return value
    number = value if isinstance(value, float) else _number_text(value) if isinstance(value, str) else None
    if number is None:
        raise error(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(number) or number != int(number):
        raise error(f"{name} must be a whole number, got {value!r}.")
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)  # exact even beyond float precision
    return int(number)
