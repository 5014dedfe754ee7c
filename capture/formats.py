"""On-disk formats in one place: schema loading, validation, bundle file names, schema versions."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa

from capture.errors import BadInputError

# --- session bundle layout -------------------------------------------------------------------
MANIFEST = "manifest.json"
VIDEO = "video.mkv"
EVENTS_JOURNAL = "events.jsonl"
EVENTS_TABLE = "events.parquet"
FRAMES_JOURNAL = "frames.jsonl"
FRAMES_TABLE = "frames.parquet"
LOCK = "recording.lock"

MANIFEST_SCHEMA = "manifest.v1.schema.json"
CONSENT_RECORD_SCHEMA = "consent-record.v1.schema.json"
EVENTS_SCHEMA = "events.v1.arrow.json"
FRAMES_SCHEMA = "frames.v1.arrow.json"
MANIFEST_VERSION = 1


def schemas_dir() -> Path:
    """schemas/ at the repository root, or its copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"schemas directory not found next to {here}")


# --- JSON Schema ------------------------------------------------------------------------------
@cache
def _json_validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((schemas_dir() / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    # Schemas are checked against their meta-schema by the tests (tests/export/test_engine.py),
    # not on every run: check_schema costs ~0.25 s of CPU per schema.
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def validate_json(obj: Any, schema_name: str, path: Path | str | None = None) -> None:
    """Raise BadInputError naming `path` and the first problem if obj does not match the schema."""
    errors = sorted(_json_validator(schema_name).iter_errors(obj), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise BadInputError(f"does not match {schema_name} at {where}: {err.message}", path)


# --- Arrow schemas ----------------------------------------------------------------------------
_SCALARS: dict[str, pa.DataType] = {
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "float32": pa.float32(), "float64": pa.float64(),
    "bool": pa.bool_(), "string": pa.string(),
}
_NESTED = re.compile(r"^(list|fixed_size_list)<(\w+)>$")


def _arrow_type(spec: str, length: int | None) -> pa.DataType:
    if spec in _SCALARS:
        return _SCALARS[spec]
    m = _NESTED.match(spec)
    if not m:
        raise ValueError(f"unknown arrow type {spec!r} in schemas/")
    inner = _SCALARS[m.group(2)]
    if m.group(1) == "list":
        return pa.list_(inner)
    if length is None:
        raise ValueError(f"fixed_size_list needs a length for {spec!r}")
    return pa.list_(inner, length)


@cache
def arrow_schema_doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((schemas_dir() / name).read_text())
    return doc


def arrow_schema(name: str, lengths: dict[str, int] | None = None) -> pa.Schema:
    """The pyarrow schema declared in schemas/<name>; `lengths` sizes fixed_size_list fields."""
    doc = arrow_schema_doc(name)
    lengths = lengths or {}
    fields = [
        pa.field(
            f["name"],
            _arrow_type(f["type"], lengths.get(f["name"])),
            nullable=f.get("nullable", True),
            metadata={"doc": f.get("doc", "")},
        )
        for f in doc["fields"]
    ]
    meta = {"schema": name, "version": str(doc["version"])}
    return pa.schema(fields, metadata=meta)


def with_optional_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with a null column for each nullable field of `schema` it lacks (a field added
    to a schema version later, absent from files written before)."""
    for field in schema:
        if field.nullable and field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def validate_table(table: pa.Table, schema: pa.Schema, path: Path | str | None = None) -> None:
    """Raise BadInputError if the table's columns, types or nulls differ from the schema."""
    want = {f.name: f for f in schema}
    have = {f.name: f for f in table.schema}
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    if missing or extra:
        raise BadInputError(
            f"columns differ from schema: missing {missing}, unexpected {extra}", path)
    for name, field in want.items():
        if not have[name].type.equals(field.type):
            raise BadInputError(
                f"column {name!r} has type {have[name].type}, schema says {field.type}", path
            )
        if not field.nullable and table.column(name).null_count:
            raise BadInputError(f"column {name!r} has nulls but the schema forbids them", path)


def table_from_rows(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table of `schema` from row dicts; missing keys become nulls."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)
