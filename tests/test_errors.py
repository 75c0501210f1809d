"""Bad input gets an error that names the file, line or field and what to do."""

import json

import pytest

from sppo.config import ConfigError, load_recipe
from sppo.models import ModelSourceError, load_policy
from sppo.prompts import PromptFileError, load_prompts, split_prompts

from .conftest import REPO, copy_without_chat_template


def test_missing_prompt_file(tmp_path):
    with pytest.raises(PromptFileError, match=r"prompt file .*nope\.jsonl does not exist"):
        load_prompts(str(tmp_path / "nope.jsonl"))


def test_malformed_prompt_file_names_the_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + "{not json\n")
    with pytest.raises(PromptFileError, match=r"prompts\.jsonl line 2: not valid JSON"):
        load_prompts(str(path))
    path.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"text": "no prompt field"}) + "\n")
    with pytest.raises(PromptFileError, match=r"line 2: field 'prompt' is missing"):
        load_prompts(str(path))


def test_parquet_without_the_prompt_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"instruction": ["a", "b"]}), path)
    with pytest.raises(PromptFileError, match=r"no column 'prompt' .*set data.prompt_column"):
        load_prompts(str(path))
    assert [r.prompt for r in load_prompts(str(path), column="instruction")] == ["a", "b"]


def test_splits_do_not_overlap_and_run_out_clearly():
    records = load_prompts(str(REPO / "data" / "prompts.jsonl"))
    splits = split_prompts(records, eval_count=100, seed=0)
    held_out = {r.prompt for r in splits.evaluation}
    iterations = [{r.prompt for r in splits.for_iteration(t, 500)} for t in (1, 2, 3)]
    assert all(not (held_out & it) for it in iterations)
    assert not (iterations[0] & iterations[1]) and not (iterations[1] & iterations[2])
    with pytest.raises(PromptFileError, match="iteration 9 needs training prompts"):
        splits.for_iteration(9, 500)


def test_held_out_constraint_types_leave_the_training_pool_not_the_evaluation():
    from sppo.prompts import carries_type

    records = load_prompts(str(REPO / "data" / "prompts.jsonl"))
    plain = split_prompts(records, eval_count=100, seed=0)
    held = split_prompts(records, eval_count=100, seed=0, holdout_types=["postscript", "quoted"])
    assert held.evaluation == plain.evaluation, "runs with and without held-out types are judged alike"
    assert held.training_pool == [r for r in plain.training_pool if not carries_type(r, ["postscript", "quoted"])]
    assert len(held.training_pool) < len(plain.training_pool)
    assert any(carries_type(r, ["quoted"]) for r in held.evaluation)


def test_unknown_held_out_constraint_type_is_named():
    recipe = str(REPO / "configs" / "smoke.yaml")
    message = r"data\.holdout_constraint_types: .*unknown constraint type\(s\) \['quotes'\]"
    with pytest.raises(ConfigError, match=message):
        load_recipe(recipe, ["data.holdout_constraint_types=[quotes]"])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("judge.type=oracle", "judge: Input tag 'oracle'"),
        ("train.loss.type=ipo", "train.loss: Input tag 'ipo'"),
        ("train.lr=1", "train.lr"),
    ],
)
def test_unknown_judge_loss_or_field_is_named(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_recipe(REPO / "configs" / "smoke.yaml", [override])


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="does not exist; pass CONFIG="):
        load_recipe("configs/nope.yaml")


def test_model_folder_without_chat_template(tiny_model_dir, tmp_path):
    bare = copy_without_chat_template(tiny_model_dir, tmp_path / "bare")
    with pytest.raises(ModelSourceError, match="has no chat template"):
        load_policy(bare)


def test_every_shipped_recipe_loads():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_recipe(path)
