"""Prompt texts are compared as a reader sees them: invisible differences never split one instruction in two."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sppo.prompts import PromptFileError, load_prompts


def _jsonl(tmp_path, *prompts: str, ensure_ascii: bool = True):
    path = tmp_path / "prompts.jsonl"
    rows = [json.dumps({"id": f"p{i}", "prompt": p}, ensure_ascii=ensure_ascii) for i, p in enumerate(prompts)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def test_nfc_and_nfd_spellings_are_one_prompt(tmp_path):
    records = load_prompts(_jsonl(tmp_path, "Describe a caf\u00e9.", "Describe a cafe\u0301.", ensure_ascii=False))
    assert [(r.id, r.prompt) for r in records] == [("p0", "Describe a caf\u00e9.")]


def test_zero_width_characters_are_removed(tmp_path):
    records = load_prompts(_jsonl(tmp_path, "Hello world", "Hello\u200b world", "Hello\ufeff\u2060 world"))
    assert [r.prompt for r in records] == ["Hello world"]


def test_control_characters_other_than_newline_and_tab_are_removed(tmp_path):
    (record,) = load_prompts(_jsonl(tmp_path, "Line one\r\n\tLine\x00 two\x7f\x85"))
    assert record.prompt == "Line one\n\tLine two"


def test_prompt_of_only_invisible_characters_names_its_line(tmp_path):
    with pytest.raises(PromptFileError, match=r"prompts\.jsonl line 2: field 'prompt' is missing or empty"):
        load_prompts(_jsonl(tmp_path, "fine", "\u200b\u200b"))


def test_parquet_row_of_only_invisible_characters_is_named(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["fine", "\ufeff \x01"]}), path)
    with pytest.raises(PromptFileError, match=r"p\.parquet row 1: field 'prompt' is missing or empty"):
        load_prompts(str(path))


def test_lone_surrogate_names_file_line_and_id(tmp_path):
    path = _jsonl(tmp_path, "fine", "broken emoji \ud83d here")  # json.dumps writes it as the escape \ud83d
    with pytest.raises(PromptFileError, match=r"prompts\.jsonl line 2: prompt 'p1' is not valid Unicode"):
        load_prompts(path)
