"""Everything about an iteration that can be checked before any flow starts, without loading a model:
the run name, the recipe's files (prompts, model source, DeepSpeed JSON, ranker), whether the prompt
pool covers the iteration, and whether the model it starts from exists. Mistakes raise ValueError."""

from __future__ import annotations

from sppo.config import RecipeConfig
from sppo.iteration import IterationError, starting_policy
from sppo.names import check_run_name
from sppo.prompts import load_splits
from sppo.sources import require_model_source, require_tokenizer_source
from sppo.store import RunLayout


def preflight(recipe: RecipeConfig, run: str, iteration: int) -> None:
    check_run_name(run)
    if not isinstance(iteration, int) or iteration < 1:
        raise IterationError(f"iterations are numbered from 1, got {iteration!r}")
    require_model_source(recipe.model.base)
    if recipe.model.tokenizer:
        require_tokenizer_source(recipe.model.tokenizer)
    load_splits(recipe.data).for_iteration(iteration, recipe.data.prompts_per_iteration)
    if recipe.train.deepspeed is not None:
        recipe.train.deepspeed.json_path()
    recipe.judge.check("judge")
    if recipe.evaluate.judge is not None:
        recipe.evaluate.judge.check("evaluate.judge")
    if iteration > 1:
        starting_policy(RunLayout(recipe.open_store(), run), iteration)
