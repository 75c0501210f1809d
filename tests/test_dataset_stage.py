"""build-parquet on a hand-written preferences file: how each `dataset.ties` pairs a prompt the judge tied."""

import numpy as np
import pytest

from sppo.artifacts import PAIRS, PREFERENCES, PREFERENCES_FILE, TRAIN_FILE, read_rows, write_rows
from sppo.config import load_recipe
from sppo.judges import sigmoid_matrix
from sppo.preferences import win_rates
from sppo.stages.dataset import build_dataset
from sppo.store import Manifest


def _preferences(store, scores_by_prompt: dict[str, list[float]]) -> str:
    url = f"{store}/run/iter-001/rank"
    folder = store / "run" / "iter-001" / "rank"
    folder.mkdir(parents=True)
    rows = []
    for prompt_id, scores in scores_by_prompt.items():
        matrix = sigmoid_matrix(np.array(scores))
        responses = [f"{prompt_id} answer {i}" for i in range(len(scores))]
        rows.append({"prompt_id": prompt_id, "prompt": f"prompt {prompt_id}", "responses": responses,
                     "scores": scores, "matrix": matrix.tolist(), "win_rates": win_rates(matrix).tolist()})  # fmt: skip
    write_rows(rows, PREFERENCES, folder / PREFERENCES_FILE)
    manifest = Manifest(stage="rank", fingerprint="f", inputs={}, outputs={})
    (folder / "manifest.json").write_bytes(manifest.to_bytes())
    return url


@pytest.mark.parametrize(
    ("ties", "tied_pair"),
    [("reference", ("t answer 0", "t answer 0")), ("first_last", ("t answer 0", "t answer 3")), ("drop", None)],
)
def test_ties(tmp_path, ties, tied_pair):
    preferences = _preferences(tmp_path, {"s": [0.0, 2.0, 1.0, 0.0], "t": [1.0, 1.0, 1.0, 1.0]})
    recipe = load_recipe(None, [f"store={tmp_path}", f"dataset.ties={ties}"])
    manifest = build_dataset(recipe, preferences, f"{tmp_path}/run/iter-001/dataset")
    rows = {r["prompt_id"]: r for r in read_rows(tmp_path / "run/iter-001/dataset" / TRAIN_FILE, PAIRS)}
    assert manifest.info["tied_prompts"] == 1
    assert (rows["s"]["chosen"], rows["s"]["rejected"]) == (
        "s answer 1",
        "s answer 0" if ties != "first_last" else "s answer 3",
    )
    if tied_pair is None:
        assert "t" not in rows
    else:
        assert (rows["t"]["chosen"], rows["t"]["rejected"]) == tied_pair
        assert rows["t"]["chosen_probs"] == rows["t"]["chosen_probs_win"] == rows["t"]["chosen_probs_lose"] == 0.5


def test_dropping_every_prompt_is_an_error(tmp_path):
    preferences = _preferences(tmp_path, {"t": [1.0, 1.0]})
    recipe = load_recipe(None, [f"store={tmp_path}", "dataset.ties=drop"])
    with pytest.raises(ValueError, match="all 1 prompts' responses tied"):
        build_dataset(recipe, preferences, f"{tmp_path}/run/iter-001/dataset")
    assert not (tmp_path / "run/iter-001/dataset").exists()
