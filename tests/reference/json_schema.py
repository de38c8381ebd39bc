"""A small JSON Schema validator: the subset of 2020-12 that docs/schemas/ uses (`jsonschema` is
not a dependency). Shared by the contract tests of readings, alerts and dead letters
(tests/core/test_records.py) and of silence alerts (tests/stream/test_silence.py)."""

from __future__ import annotations

import re


def _is_type(value, name: str) -> bool:
    return {
        "object": isinstance(value, dict), "array": isinstance(value, list),
        "string": isinstance(value, str), "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }[name]


def schema_errors(value, schema: dict, root: dict | None = None, path: str = "$") -> list[str]:
    """The subset of JSON Schema 2020-12 our schemas use; unknown keywords fail loudly."""
    root = root or schema
    known = {"$schema", "$id", "$defs", "title", "description", "default", "$ref", "type",
             "enum", "const", "required", "properties", "additionalProperties", "items",
             "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
             "oneOf"}
    assert set(schema) <= known, f"validator does not know {set(schema) - known}"
    errors: list[str] = []
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        errors += schema_errors(value, target, root, path)
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is_type(value, t) for t in types):
            return errors + [f"{path}: {value!r} is not {types}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} not in enum")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: {value!r} != const")
    if "oneOf" in schema:
        passing = sum(not schema_errors(value, s, root, path) for s in schema["oneOf"])
        if passing != 1:
            errors.append(f"{path}: matches {passing} of oneOf")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1e9):
            errors.append(f"{path}: length {len(value)} out of bounds")
    if _is_type(value, "number"):
        if value < schema.get("minimum", -float("inf")) or value > schema.get("maximum", 1e308):
            errors.append(f"{path}: {value} out of bounds")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {value} <= exclusiveMinimum")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, dict):
        errors += [f"{path}: missing {k}" for k in schema.get("required", ()) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], root, f"{path}.{k}")
            elif extra is False:
                errors.append(f"{path}: unexpected {k}")
            elif isinstance(extra, dict):
                errors += schema_errors(v, extra, root, f"{path}.{k}")
    return errors
