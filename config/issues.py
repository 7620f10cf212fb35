"""How the config names a problem: key paths, cross-field errors, and values read from a raw table."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Strict, TypeAdapter, ValidationError

Loc = tuple[str | int, ...]
"""A key path in the config: table names and array indexes."""


class CrossCheckError(ValueError):
    """One or more cross-field problems, each with its key path relative to the model that found it.

    The loader expands these into one issue per problem; on its own the message lists them all.
    """

    def __init__(self, issues: list[tuple[Loc, str]]) -> None:
        self.issues = list(issues)
        super().__init__("; ".join(f"{dotted(loc)}: {message}" for loc, message in self.issues))


def dotted(loc: Loc) -> str:
    """A key path as the config writes it (`bays.3.connector`; `config` for the whole file)."""
    return ".".join(str(part) for part in loc) or "config"


def field_value(model: type[BaseModel], name: str, table: Mapping[str, Any]) -> Any:
    """Field `name` of a raw table as the model would take it (its default when absent); None when invalid."""
    field = model.model_fields[name]
    if name not in table:
        return None if field.is_required() else field.get_default()
    try:
        return _field_adapter(model, name).validate_python(table[name])
    except ValidationError:
        return None


@functools.cache
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    field = model.model_fields[name]
    return TypeAdapter(Annotated[(field.annotation, *field.metadata, Strict())])  # type: ignore[misc]


def number_text(value: Any) -> str:
    """A value as an error message writes it: 80, not 80.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
