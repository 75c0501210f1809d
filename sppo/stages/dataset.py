"""build-parquet: one (chosen, rejected) pair per prompt with the SPPO probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sppo.config import RecipeConfig
from sppo.preferences import select_pair
from sppo.schemas import PAIRS, PREFERENCES, read_rows, write_rows
from sppo.stages.rank import PREFERENCES_FILE
from sppo.store import Manifest, commit_stage

TRAIN_FILE = "train.parquet"


def build_dataset(recipe: RecipeConfig, preferences: str, out: str) -> Manifest:
    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        pairs = []
        for row in read_rows(inputs["preferences"] / PREFERENCES_FILE, PREFERENCES):
            pair = select_pair(np.array(row["scores"]), np.array(row["matrix"]))
            pairs.append(
                {
                    "prompt_id": row["prompt_id"],
                    "prompt": row["prompt"],
                    "chosen": row["responses"][pair.winner],
                    "rejected": row["responses"][pair.loser],
                    "chosen_probs": pair.chosen_probs,
                    "chosen_probs_win": pair.chosen_probs_win,
                    "chosen_probs_lose": pair.chosen_probs_lose,
                }
            )
        ties = sum(p["chosen_probs"] == 0.5 for p in pairs)
        return {"rows": write_rows(pairs, PAIRS, tmp / TRAIN_FILE), "tied_pairs": ties}

    # No recipe field shapes the pairs beyond what rank already fingerprinted.
    return commit_stage(recipe.open_store(), out, "dataset", "pairs-v1", {"preferences": preferences}, produce)
