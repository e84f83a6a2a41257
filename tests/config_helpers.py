"""Config dicts for the bad-input tables: placeholders filled in, overrides merged into a base."""

import copy


def fill(obj, values: dict[str, str]):
    """``obj`` (nested dicts, lists and strings) with each placeholder key of ``values`` replaced in its strings."""
    if isinstance(obj, str):
        for key, value in values.items():
            obj = obj.replace(key, value)
        return obj
    if isinstance(obj, dict):
        return {k: fill(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fill(v, values) for v in obj]
    return obj


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, mapping into mapping (a copy: ``base`` is left as it was)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
