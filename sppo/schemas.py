"""Row schemas of the parquet files stages hand to each other, checked on write and on read."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

GENERATIONS_FILE = "generations.parquet"  # in the generate stage's folder; rank reads it without loading torch
GENERATIONS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("constraints", pa.string()),  # JSON list of the prompt's verifiable constraints
        ("responses", pa.list_(pa.string())),
        ("response_tokens", pa.list_(pa.int32())),
        ("finished", pa.list_(pa.bool_())),
    ]
)

PREFERENCES = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("responses", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        ("matrix", pa.list_(pa.list_(pa.float64()))),  # matrix[i][j] = P(y_i > y_j | x)
        ("win_rates", pa.list_(pa.float64())),  # P(y_i > pi_t | x) = mean_j matrix[i][j]
    ]
)

# Column names follow the uclaml/SPPO reference data so its tooling reads our parquet too.
PAIRS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_probs", pa.float64()),  # P(y_w > y_l | x)
        ("chosen_probs_win", pa.float64()),  # P(y_w > pi_t | x)
        ("chosen_probs_lose", pa.float64()),  # P(y_l > pi_t | x)
    ]
)


class SchemaError(ValueError):
    pass


def _check(table: pa.Table, schema: pa.Schema, where: str) -> None:
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise SchemaError(f"{where}: missing columns {missing}; expected {schema.names}")
    for f in schema:
        actual = table.schema.field(f.name).type
        if actual != f.type:
            raise SchemaError(f"{where}: column {f.name!r} has type {actual}, expected {f.type}")
    for f in schema:
        nulls = table.column(f.name).null_count
        if nulls:
            raise SchemaError(f"{where}: column {f.name!r} has {nulls} null values")


def write_rows(rows: list[dict], schema: pa.Schema, path: Path) -> int:
    table = pa.Table.from_pylist(rows, schema=schema)
    _check(table, schema, str(path))
    pq.write_table(table, path)
    return table.num_rows


def read_rows(path: Path, schema: pa.Schema) -> list[dict]:
    if not path.is_file():
        raise SchemaError(f"{path} does not exist; run the stage that writes it first")
    try:
        table = pq.read_table(path)
    except pa.ArrowException as err:
        raise SchemaError(f"{path} is not a readable parquet file ({err}); delete its stage folder and rerun") from None
    _check(table, schema, str(path))
    return table.select(schema.names).to_pylist()
