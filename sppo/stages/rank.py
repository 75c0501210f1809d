"""rank: the judge's K x K preference matrix and per-response win rates for every prompt."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from tqdm.auto import tqdm

from sppo.artifacts import (
    GENERATIONS,
    GENERATIONS_FILE,
    PREFERENCES,
    PREFERENCES_FILE,
    SEQUENCE_COLUMNS,
    read_rows,
    signature,
    write_rows,
)
from sppo.config import RecipeConfig
from sppo.judges import JudgeSettings
from sppo.preferences import check_preference_matrix, check_scores, win_rates
from sppo.prompts import PromptRecord
from sppo.runner import Runner, close, run_in_process
from sppo.settings import fingerprint
from sppo.store import Manifest, commit_stage


class RankWorker:
    """One judge: built once, then ranks whatever chunks of generation rows it is handed."""

    def __init__(self, cfg: JudgeSettings, precision: str):
        self.judge = cfg.build(precision)

    def close(self) -> None:
        close(self.judge)  # a judge that runs a generation engine (llm) frees it

    def __call__(self, chunks: list[list[dict]]) -> list[list[dict]]:
        return [self.rank_chunk(chunk) for chunk in tqdm(chunks, desc="rank", unit="batch")]

    def rank_chunk(self, chunk: list[dict]) -> list[dict]:
        prompts = [
            PromptRecord(r["prompt_id"], r["prompt"], tuple(json.loads(r["constraints"])), r["chat_prompt"])
            for r in chunk
        ]
        ranked = []
        for row, verdict in zip(chunk, self.judge.judge(prompts, [r["responses"] for r in chunk]), strict=True):
            where = f"{self.judge.name} judge, prompt {row['prompt_id']}"
            check_scores(verdict.scores, where)
            check_preference_matrix(verdict.matrix, where)
            ranked.append(
                {
                    "prompt_id": row["prompt_id"],
                    "prompt": row["prompt"],
                    "responses": row["responses"],
                    "scores": [float(s) for s in verdict.scores],
                    "matrix": verdict.matrix.tolist(),
                    "win_rates": win_rates(verdict.matrix).tolist(),
                    **{name: row.get(name) for name in SEQUENCE_COLUMNS},
                }
            )
        return ranked


def rank(recipe: RecipeConfig, generations: str, out: str, runner: Runner = run_in_process) -> Manifest:
    """`runner` decides where the judge batches run (in this process by default); rows keep their order."""

    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        rows = read_rows(inputs["generations"] / GENERATIONS_FILE, GENERATIONS)
        size = recipe.judge.batch_size
        chunks = [rows[start : start + size] for start in range(0, len(rows), size)]
        ranked = [
            row
            for chunk in runner(functools.partial(RankWorker, recipe.judge, recipe.precision), chunks)
            for row in chunk
        ]
        return {"rows": write_rows(ranked, PREFERENCES, tmp / PREFERENCES_FILE), "judge": recipe.judge.type}

    # No `compute` section here: where the chunks run never changes the verdicts.
    return commit_stage(recipe.open_store(), out, "rank", fingerprint_of(recipe), {"generations": generations}, produce)


def fingerprint_of(recipe: RecipeConfig) -> str:
    return fingerprint(recipe.judge, recipe.judge.precision_used(recipe.precision), signature(PREFERENCES))
