"""Prompt records, prompt files, and the per-iteration / held-out splits."""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PromptRecord:
    """One instruction. `constraints` are the verifiable rules the offline judge checks (may be empty
    for prompt sets that bring none, e.g. a user's own file judged by PairRM)."""

    id: str
    prompt: str
    constraints: tuple[dict[str, Any], ...] = field(default=())
    # The prompt as the policy saw it, its chat template applied (text); what PairRM reads in the reference.
    chat_prompt: str = ""


log = logging.getLogger(__name__)


class PromptFileError(ValueError):
    pass


# Characters a reader does not see: two prompts differing only in them are one instruction, and must dedupe
# to one, or the same instruction lands in both the held-out split and a training chunk.
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


def _visible_text(text: str, where: str, prompt_id: str) -> str:
    """`text` NFC-normalised, without zero-width characters and control characters other than newline and tab."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # json.loads accepts a lone surrogate escape; a tokenizer later does not
        raise PromptFileError(
            f"{where}: prompt {prompt_id!r} is not valid Unicode (lone surrogate {text[err.start]!r} at character "
            f"{err.start}); write the character whole, or both halves of its surrogate pair"
        ) from None
    text = "".join(c for c in text.translate(_ZERO_WIDTH) if c in "\n\t" or unicodedata.category(c) != "Cc")
    return unicodedata.normalize("NFC", text)  # after the removals, which can leave characters to compose


def _record(row: dict[str, Any], column: str, where: str, index: int) -> PromptRecord:
    prompt_id = str(row.get("id") or f"row{index:06d}")
    text = row.get(column)
    if isinstance(text, str):
        text = _visible_text(text, where, prompt_id)
    if not isinstance(text, str) or not text.strip():
        raise PromptFileError(
            f"{where}: field {column!r} is missing or empty (or holds only invisible characters); every row "
            "needs a non-empty prompt"
        )
    constraints = row.get("constraints") or ()
    if isinstance(constraints, str):
        try:
            constraints = json.loads(constraints)
        except json.JSONDecodeError:
            raise PromptFileError(
                f"{where}: field 'constraints' is a string but not JSON; give a list of objects"
            ) from None
    if not isinstance(constraints, list | tuple) or not all(isinstance(c, dict) for c in constraints):
        raise PromptFileError(f"{where}: field 'constraints' must be a list of objects")
    return PromptRecord(id=prompt_id, prompt=text, constraints=tuple(constraints))


def _read_jsonl(path: Path, column: str) -> list[PromptRecord]:
    records = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): JSON strings may hold U+2028
    except UnicodeDecodeError as err:
        line_no = path.read_bytes()[: err.start].count(b"\n") + 1
        raise PromptFileError(f"{path} line {line_no}: not UTF-8 text ({err.reason}); save the file as UTF-8") from None
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise PromptFileError(f"{path} line {line_no}: not valid JSON ({err.msg}); fix or remove it") from None
        if not isinstance(row, dict):
            raise PromptFileError(f"{path} line {line_no}: expected a JSON object with a {column!r} field")
        records.append(_record(row, column, f"{path} line {line_no}", line_no))
    return records


def _read_table(rows: list[dict[str, Any]], column: str, where: str) -> list[PromptRecord]:
    if rows and column not in rows[0]:
        raise PromptFileError(f"{where}: no column {column!r} (columns: {sorted(rows[0])}); set data.prompt_column")
    return [_record(row, column, f"{where} row {i}", i) for i, row in enumerate(rows)]


def is_hub_dataset(source: str) -> bool:
    """data.prompts names an HF dataset id (owner/name), not a local file."""
    path = Path(source)
    return not (path.suffix in (".jsonl", ".parquet") or path.exists() or _looks_local(source))


def load_prompts(source: str, column: str = "prompt", revision: str | None = None) -> list[PromptRecord]:
    """Read prompts from a JSONL or parquet file, or an HF dataset id (split 'train') at `revision` (a commit
    sha, branch or tag; None: the default branch).

    Texts are NFC-normalised and stripped of zero-width and control characters (newline and tab kept) first;
    duplicate prompt texts are then dropped (first kept, with a warning that counts them) so that splits never
    share an instruction. A local path that does not exist is an error here, never taken for a dataset id."""
    path = Path(source)
    if not is_hub_dataset(source):
        if not path.is_file():
            raise PromptFileError(
                f"prompt file {path} does not exist; set data.prompts to a .jsonl or .parquet file (or an HF "
                "dataset id owner/name)"
            )
        if path.suffix == ".jsonl":
            records = _read_jsonl(path, column)
        elif path.suffix == ".parquet":
            records = _read_parquet(path, column)
        else:
            raise PromptFileError(
                f"prompts {source!r}: expected a .jsonl or .parquet file, or an HF dataset id owner/name"
            )
    else:
        import datasets
        from huggingface_hub import snapshot_download

        try:
            # The repo's files at that commit, through the hub's cache (offline: from the cache alone), then read
            # as a local dataset folder: what is read is exactly that commit.
            folder = snapshot_download(source, repo_type="dataset", revision=revision)
            rows = datasets.load_dataset(folder, split="train").to_list()
        except Exception as err:  # noqa: BLE001 - the hub, the network or the dataset: all the user's to fix
            said = str(err).splitlines()[0][:200] if str(err) else ""
            raise PromptFileError(
                f"prompts {source!r}: could not load it as an HF dataset at revision {revision or 'main'} "
                f"({type(err).__name__}: {said}); set data.prompts to a local .jsonl or .parquet file, or check the "
                "dataset id, data.revision and HF_TOKEN"
            ) from None
        records = _read_table(rows, column, source)
    if not records:
        raise PromptFileError(f"prompts {source}: no prompts found")
    unique, seen = [], set()
    for record in records:
        if record.prompt not in seen:
            seen.add(record.prompt)
            unique.append(record)
    if len(unique) < len(records):
        log.warning("prompts %s: %d duplicate prompt text(s) dropped (first kept)", source, len(records) - len(unique))
    return unique


def _looks_local(source: str) -> bool:
    # An HF dataset id is exactly owner/name; anything else with a path shape is meant as a local file.
    return source.startswith(("/", "./", "../", "~")) or source.count("/") != 1 or Path(source).parent.is_dir()


def _read_parquet(path: Path, column: str) -> list[PromptRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise PromptFileError(f"{path} is not a readable parquet file ({err})") from None
    return _read_table(table.to_pylist(), column, str(path))


def load_splits(data) -> PromptSplits:
    """The held-out and per-iteration splits of a recipe's `data` section (at data.revision for a hub dataset)."""
    records = load_prompts(data.prompts, data.prompt_column, data.revision)
    return split_prompts(records, data.eval_prompts, data.split_seed, data.holdout_constraint_types)


@dataclass(frozen=True)
class PromptSplits:
    evaluation: list[PromptRecord]
    training_pool: list[PromptRecord]

    def for_iteration(self, iteration: int, per_iteration: int) -> list[PromptRecord]:
        """Iteration t (1-based) trains on its own fresh chunk of the pool, as in the paper."""
        start, stop = (iteration - 1) * per_iteration, iteration * per_iteration
        if iteration < 1 or stop > len(self.training_pool):
            raise PromptFileError(
                f"iteration {iteration} needs training prompts {start}..{stop} but the pool holds "
                f"{len(self.training_pool)}; lower data.prompts_per_iteration or add prompts"
            )
        return self.training_pool[start:stop]


def split_prompts(
    records: list[PromptRecord], eval_count: int, seed: int, holdout_types: Sequence[str] = ()
) -> PromptSplits:
    """A seeded permutation: its head is the held-out evaluation set, the rest the training pool, less every
    prompt carrying a constraint type in `holdout_types` (never trained on, so the held-out prompts that carry
    one measure transfer to an instruction the policy never practised). The evaluation set does not depend on
    `holdout_types`: runs with and without them are judged on the same prompts."""
    if eval_count >= len(records):
        raise PromptFileError(f"data.eval_prompts={eval_count} leaves no training prompts out of {len(records)}")
    order = np.random.default_rng(seed).permutation(len(records))
    shuffled = [records[i] for i in order]
    pool = [r for r in shuffled[eval_count:] if not carries_type(r, holdout_types)]
    return PromptSplits(evaluation=shuffled[:eval_count], training_pool=pool)


def carries_type(record: PromptRecord, types: Sequence[str]) -> bool:
    """Whether one of the record's constraints is of a type in `types`."""
    return any(c.get("type") in types for c in record.constraints)


def prompts_digest(records: Sequence[PromptRecord]) -> str:
    """sha256 of the prompts' ids, texts and constraints in order: what a stage that reads them depends on,
    whatever file or revision they came from."""
    rows = [[r.id, r.prompt, list(r.constraints)] for r in records]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
