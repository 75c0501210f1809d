"""build-parquet: one (chosen, rejected) pair per prompt with the SPPO probabilities."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from sppo.artifacts import PAIRS, PREFERENCES, PREFERENCES_FILE, TRAIN_FILE, read_rows, signature, write_rows
from sppo.config import RecipeConfig
from sppo.preferences import all_tied, select_pair
from sppo.settings import fingerprint
from sppo.store import Manifest, commit_stage

log = logging.getLogger(__name__)


def build_dataset(recipe: RecipeConfig, preferences: str, out: str) -> Manifest:
    ties = recipe.dataset.ties

    def produce(tmp: Path, inputs: dict[str, Path]) -> dict:
        pairs, tied = [], 0
        rows = read_rows(inputs["preferences"] / PREFERENCES_FILE, PREFERENCES)
        for row in rows:
            scores = np.array(row["scores"])
            tied += all_tied(scores)
            if ties == "drop" and all_tied(scores):
                continue
            pair = select_pair(scores, np.array(row["matrix"]), ties)
            pairs.append(
                {
                    "prompt_id": row["prompt_id"],
                    "prompt": row["prompt"],
                    "chosen": row["responses"][pair.winner],
                    "rejected": row["responses"][pair.loser],
                    "chosen_probs": pair.chosen_probs,
                    "chosen_probs_win": pair.chosen_probs_win,
                    "chosen_probs_lose": pair.chosen_probs_lose,
                    **_sequences(row, pair.winner, pair.loser),
                }
            )
        if tied:
            log.info("%d of %d prompts: the judge tied all responses (dataset.ties: %s)", tied, len(rows), ties)
        if not pairs:
            raise ValueError(
                f"all {len(rows)} prompts' responses tied under the judge, so dataset.ties: drop leaves nothing to "
                "train on; use dataset.ties: reference, or a judge that tells the responses apart"
            )
        return {"rows": write_rows(pairs, PAIRS, tmp / TRAIN_FILE), "tied_prompts": tied, "ties": ties}

    store = recipe.open_store()
    return commit_stage(store, out, "dataset", fingerprint_of(recipe), {"preferences": preferences}, produce)


def fingerprint_of(recipe: RecipeConfig) -> str:
    # The pairs depend on how ties are paired and on the rows' schema (what a pair carries); the rest the
    # rank stage already fingerprinted.
    return fingerprint(recipe.dataset, signature(PAIRS))


def _sequences(row: dict, winner: int, loser: int) -> dict:
    """The pair's token ids and pi_t log-probabilities where generation recorded them (optional columns)."""
    ids, logps = row.get("response_token_ids"), row.get("response_logprobs")
    return {
        "prompt_token_count": row.get("prompt_token_count"),
        "chosen_token_ids": ids[winner] if ids else None,
        "rejected_token_ids": ids[loser] if ids else None,
        "chosen_ref_logprob": logps[winner] if logps else None,
        "rejected_ref_logprob": logps[loser] if logps else None,
    }
