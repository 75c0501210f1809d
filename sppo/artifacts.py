"""The artifacts' file names and row schemas, in one place: every stage, the store and the inspection commands
import them from here, and stages never import each other. Parquet rows are checked on write and on read.

<store>/<run>/iter-NNN/<stage>/<file>, each stage folder with MANIFEST written last (sppo.store)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Field metadata: every float column must be finite; a probability column must also lie in [0, 1].
PROBABILITY = {b"range": b"probability"}
# A column a file may lack or hold nulls in: data from elsewhere (the reference's parquet, a generator
# without log-probabilities) has none of it, and readers fall back to what the required columns say.
OPTIONAL = {b"presence": b"optional"}

# Stage folders of an iteration, in the order an iteration writes them; iteration 0 holds only `model`.
STAGES = ("generate", "rank", "dataset", "model", "evaluate")
# The stage that writes each folder, by the name people see: Prefect's task runs, logs and tables. Folders are
# named after what they hold (iteration 0's model/ is written by prepare-base, every later one by train).
STAGE_NAMES = {
    "generate": "generate",
    "rank": "rank",
    "dataset": "build-parquet",
    "model": "train",
    "evaluate": "evaluate",
}
MANIFEST = "manifest.json"  # in every stage folder, written last
GENERATIONS_FILE = "generations.parquet"  # generate/
PREFERENCES_FILE = "preferences.parquet"  # rank/
TRAIN_FILE = "train.parquet"  # dataset/
TRAIN_LOG = "train_log.jsonl"  # model/, beside the weights: one record per optimizer step
# model/adapter/: with train.adapter, the trained adapter as peft saves it (adapter_config.json,
# adapter_model.safetensors); model/ itself holds the merged policy, so readers of model/ never look inside.
ADAPTER_FOLDER = "adapter"
METRICS_FILE = "metrics.json"  # evaluate/
BEST_FILE = "BEST.json"  # <run>/: the run's best model, a pointer (sppo.runs.best)
ANSWERS_FOLDER = "eval-answers"  # <run>/: held-out answers per model, a checksummed cache
REVISIONS_FOLDER = "hub-revisions"  # <run>/: the commit each hub dataset or model was pinned to on first use

GENERATIONS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("chat_prompt", pa.string()),  # the prompt in the policy's chat template, as text (what PairRM reads)
        ("constraints", pa.string()),  # JSON list of the prompt's verifiable constraints
        ("responses", pa.list_(pa.string())),
        ("response_tokens", pa.list_(pa.int32())),
        ("finished", pa.list_(pa.bool_())),
        # What training reads instead of re-tokenizing the text and recomputing pi_t's log-probabilities:
        # the prompt's tokens as the policy saw them (after the cut)
        pa.field("prompt_token_count", pa.int32(), metadata=OPTIONAL),
        # the sampled tokens, end-of-turn excluded
        pa.field("response_token_ids", pa.list_(pa.list_(pa.int32())), metadata=OPTIONAL),
        # log pi_t(tokens + end-of-turn | prompt)
        pa.field("response_logprobs", pa.list_(pa.float64()), metadata=OPTIONAL),
    ]
)
# The columns a response's training sequence and its reference log-probability come from, handed on by rank.
SEQUENCE_COLUMNS = ("prompt_token_count", "response_token_ids", "response_logprobs")

PREFERENCES = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("responses", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        pa.field("matrix", pa.list_(pa.list_(pa.float64())), metadata=PROBABILITY),  # P(y_i > y_j | x)
        pa.field("win_rates", pa.list_(pa.float64()), metadata=PROBABILITY),  # P(y_i > pi_t | x)
        *(GENERATIONS.field(name) for name in SEQUENCE_COLUMNS),
    ]
)

# Column names follow the uclaml/SPPO reference data so its tooling reads our parquet too.
PAIRS = pa.schema(
    [
        ("prompt_id", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        pa.field("chosen_probs", pa.float64(), metadata=PROBABILITY),  # P(y_w > y_l | x)
        pa.field("chosen_probs_win", pa.float64(), metadata=PROBABILITY),  # P(y_w > pi_t | x)
        pa.field("chosen_probs_lose", pa.float64(), metadata=PROBABILITY),  # P(y_l > pi_t | x)
        # Beyond the reference's columns: the pair's token ids and pi_t's log-probabilities of chosen and
        # rejected (each + end-of-turn), from generation, so training need not recompute them.
        pa.field("prompt_token_count", pa.int32(), metadata=OPTIONAL),
        pa.field("chosen_token_ids", pa.list_(pa.int32()), metadata=OPTIONAL),
        pa.field("rejected_token_ids", pa.list_(pa.int32()), metadata=OPTIONAL),
        pa.field("chosen_ref_logprob", pa.float64(), metadata=OPTIONAL),
        pa.field("rejected_ref_logprob", pa.float64(), metadata=OPTIONAL),
    ]
)


def encode_answers(rows: list[dict]) -> bytes:
    """A held-out answer cache entry: the rows and the sha256 of their canonical JSON."""
    return json.dumps({"sha256": _answers_digest(rows), "rows": rows}).encode()


def decode_answers(data: bytes) -> list[dict] | None:
    """The rows of an answer cache entry, or None when it is damaged (unreadable or checksum mismatch)."""
    try:
        entry = json.loads(data)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("rows"), list):
        return None
    return entry["rows"] if entry.get("sha256") == _answers_digest(entry["rows"]) else None


def _answers_digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


class SchemaError(ValueError):
    pass


def _check(table: pa.Table, schema: pa.Schema, where: str) -> None:
    missing = [f.name for f in schema if f.name not in table.column_names and f.metadata != OPTIONAL]
    if missing:
        raise SchemaError(f"{where}: missing columns {missing}; expected {schema.names}")
    schema = pa.schema([f for f in schema if f.name in table.column_names])
    for f in schema:
        actual = table.schema.field(f.name).type
        if actual != f.type:
            raise SchemaError(f"{where}: column {f.name!r} has type {actual}, expected {f.type}")
    for f in schema:
        column = table.column(f.name)
        if column.null_count and f.metadata != OPTIONAL:
            raise SchemaError(f"{where}: column {f.name!r} has {column.null_count} null values")
        problem = _value_problem(column, probability=f.metadata == PROBABILITY, optional=f.metadata == OPTIONAL)
        if problem:
            raise SchemaError(f"{where}: column {f.name!r} {problem}")


def _value_problem(column: pa.ChunkedArray, probability: bool, optional: bool = False) -> str | None:
    """'row R holds V, ...' for the first non-finite (or, for a probability, out-of-[0, 1]) float, else None.
    A null counts as non-finite unless the column is optional."""
    values = column.combine_chunks()
    rows = np.arange(len(values))
    while pa.types.is_list(values.type):  # nested lists: follow each value back to its row
        rows = rows[pc.list_parent_indices(values).to_numpy()]
        values = pc.list_flatten(values)
    if not pa.types.is_floating(values.type) or len(values) == 0:
        return None
    array = values.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(array) | ((array < 0.0) | (array > 1.0) if probability else False)
    if optional:
        bad &= values.is_valid().to_numpy(zero_copy_only=False)
    if not bad.any():
        return None
    first = int(np.argmax(bad))
    wanted = "a probability in [0, 1]" if probability else "a finite number"
    return (
        f"row {int(rows[first])} holds {float(array[first])}, not {wanted} ({int(bad.sum())} such value(s)); "
        "the stage that wrote it computed garbage: fix its input and rerun it"
    )


def signature(schema: pa.Schema) -> str:
    """The schema as text, field metadata included: part of the fingerprint of the stage that writes it, so a
    change to what a row carries redoes that stage instead of reusing a file without the new column."""
    return schema.to_string(show_field_metadata=True)


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
    rows = table.select([name for name in schema.names if name in table.column_names]).to_pylist()
    absent = [name for name in schema.names if name not in table.column_names]  # optional ones (_check)
    return [row | dict.fromkeys(absent) for row in rows] if absent else rows
