"""build-parquet: one (chosen, rejected) pair per prompt with the SPPO probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sppo.artifacts import PAIRS, PREFERENCES, PREFERENCES_FILE, TRAIN_FILE, read_rows, write_rows
from sppo.config import RecipeConfig
from sppo.preferences import select_pair
from sppo.settings import fingerprint
from sppo.store import Manifest, commit_stage


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

    store = recipe.open_store()
    return commit_stage(store, out, "dataset", fingerprint_of(recipe), {"preferences": preferences}, produce)


def fingerprint_of(recipe: RecipeConfig) -> str:
    # The pairs depend on the rows' schema (what a pair carries) and on nothing else the rank stage did not
    # already fingerprint.
    return fingerprint(PAIRS.to_string(show_field_metadata=True))
