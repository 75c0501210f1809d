"""rank: the judge's K x K preference matrix and per-response win rates for every prompt."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from sppo.config import RecipeConfig
from sppo.judges import build_judge
from sppo.preferences import check_preference_matrix, win_rates
from sppo.prompts import PromptRecord
from sppo.schemas import GENERATIONS, PREFERENCES, read_rows, write_rows
from sppo.stages.generate import GENERATIONS_FILE
from sppo.store import ArtifactStore, Manifest, commit_stage

PREFERENCES_FILE = "preferences.parquet"


def rank(recipe: RecipeConfig, generations: str, out: str) -> Manifest:
    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        rows = read_rows(inputs["generations"] / GENERATIONS_FILE, GENERATIONS)
        judge = build_judge(recipe.judge)
        size = recipe.judge.batch_size
        ranked = []
        for start in tqdm(range(0, len(rows), size), desc="rank", unit="batch"):
            chunk = rows[start : start + size]
            prompts = [PromptRecord(r["prompt_id"], r["prompt"], tuple(json.loads(r["constraints"]))) for r in chunk]
            for row, verdict in zip(chunk, judge.judge(prompts, [r["responses"] for r in chunk]), strict=True):
                check_preference_matrix(verdict.matrix, where=f"{judge.name} judge, prompt {row['prompt_id']}")
                ranked.append(
                    {
                        "prompt_id": row["prompt_id"],
                        "prompt": row["prompt"],
                        "responses": row["responses"],
                        "scores": [float(s) for s in verdict.scores],
                        "matrix": verdict.matrix.tolist(),
                        "win_rates": win_rates(verdict.matrix).tolist(),
                    }
                )
        return {"rows": write_rows(ranked, PREFERENCES, tmp / PREFERENCES_FILE), "judge": judge.name}

    return commit_stage(
        ArtifactStore(recipe.store), out, "rank", recipe.fingerprint("judge"), {"generations": generations}, produce
    )
