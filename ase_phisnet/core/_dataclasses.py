"""Construction of frozen config dataclasses from plain dicts (JSON, YAML) with clear errors."""

from __future__ import annotations

import dataclasses


def from_dict_checked(cls, values: dict | None, where: str | None = None):
    """``cls(**values)``, refusing keys that are not fields of ``cls`` (typos fail loudly)."""
    values = dict(values or {})
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown keys in '{where or cls.__name__}': {sorted(unknown)}; "
                         f"known: {sorted(names)}")
    return cls(**values)
