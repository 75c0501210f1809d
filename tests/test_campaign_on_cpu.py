"""Two-iteration campaigns of two losses on two seeds of the smoke recipe, and the report written from them."""

import json
import re

from flows.sppo_campaign import campaign_runs, main
from sppo.report import ANALYSIS_MARKER, collect
from sppo.store import ArtifactStore

from .conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")


def test_run_names_per_loss_and_seed():
    assert campaign_runs("c", ["sppo", "sppo_hard"], 1) == {"sppo": ["c-sppo"], "sppo_hard": ["c-sppo-hard"]}
    assert campaign_runs("c", ["dpo"], 2) == {"dpo": ["c-s0-dpo", "c-s1-dpo"]}
    assert campaign_runs("c", None, 1) == {"": ["c"]}


def test_campaigns_per_loss_and_seed_and_their_report(tmp_path):
    report = tmp_path / "docs" / "results"
    args = ["--run", "c", "--iterations", "2", "--config", SMOKE, "--losses", "sppo", "dpo", "--seeds", "2"]
    args += ["--report", str(report), "--set", f"store={tmp_path / 'store'}"]
    args += ["--set", f"data.prompts={REPO / 'data' / 'prompts.jsonl'}"]
    assert main(args) == 0
    root = tmp_path / "store"
    store = ArtifactStore(root)
    results = collect(store, {"sppo": "c-s0-sppo", "dpo": "c-s0-dpo"})
    assert [(r.label, r.iteration) for r in results] == [("sppo", 1), ("sppo", 2), ("dpo", 1), ("dpo", 2)]
    assert store.manifest(f"{root}/c-s1-dpo/iter-002/model").info["loss"] == "dpo"
    metrics = json.loads((root / "c-s0-sppo" / "iter-002" / "evaluate" / "metrics.json").read_text())
    assert {"shorter", "similar", "longer"} == set(metrics["vs_base"]["by_length"])

    def manifest(run: str, iteration: int, stage: str) -> bytes:
        return (root / run / f"iter-{iteration:03d}" / stage / "manifest.json").read_bytes()

    # Iteration 1's data were sampled once per seed: a seed's dpo run holds its sppo run's stages...
    for seed in (0, 1):
        for stage in ("generate", "rank", "dataset"):
            assert manifest(f"c-s{seed}-sppo", 1, stage) == manifest(f"c-s{seed}-dpo", 1, stage)
    # ...the seeds sampled their own, from one shared base model...
    assert manifest("c-s0-sppo", 1, "generate") != manifest("c-s1-sppo", 1, "generate")
    assert manifest("c-s0-sppo", 0, "model") == manifest("c-s1-dpo", 0, "model")
    assert not list((root / "c-s1-sppo" / "iter-001").glob("*.superseded-*")), "nothing copied only to be redone"
    # ...and the models trained from the same data differ by loss only.
    sppo_model, dpo_model = (store.manifest(f"{root}/{run}/iter-001/model") for run in ("c-s0-sppo", "c-s0-dpo"))
    assert sppo_model.inputs == dpo_model.inputs and sppo_model.outputs != dpo_model.outputs

    md = report.with_suffix(".md")
    text = md.read_text()
    assert text.count("| sppo |") == 2 and text.count("| dpo |") == 2 and "results.png" in text
    assert "mean over 2 seed(s)" in text and "Iteration 2, head to head: sppo vs dpo: win rate" in text
    sppo_2 = next(line for line in text.splitlines() if line.startswith("| sppo | 2 |"))
    assert sppo_2.count("(") == 8, "each figure gives each seed's value"  # 8 columns, one (...) each
    assert re.match(r"\| sppo \| 2 \| \S+ \[\S+, \S+\] \(", sppo_2), "win rates pooled over the seeds' prompts"
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A hand-written analysis below the marker survives regenerating the report (the rerun reuses every stage).
    md.write_text(text.replace(ANALYSIS_MARKER, f"{ANALYSIS_MARKER}\nSPPO reading: by hand."))
    assert main(args) == 0
    again = md.read_text()
    assert again.count("| dpo |") == 2 and again.rstrip().endswith("SPPO reading: by hand.")

    # With held-out constraint types the report adds the held-out prompts carrying one, apart (transfer).
    from sppo.config import load_recipe
    from sppo.seed_report import held_out_prompts, write_seed_report

    recipe = load_recipe(SMOKE, [f"store={root}", f"data.prompts={REPO / 'data' / 'prompts.jsonl'}"])
    prompts = held_out_prompts(recipe, store, "c-s0-sppo")
    kind = prompts[0].constraints[0]["type"]
    labels = {"sppo": ["c-s0-sppo", "c-s1-sppo"], "dpo": ["c-s0-dpo", "c-s1-dpo"]}
    judge = recipe.evaluation_judge.build(recipe.precision)
    unseen = write_seed_report(store, labels, prompts, judge, tmp_path / "unseen", "t", holdout_types=[kind])
    unseen_text = unseen.read_text()
    assert f"never trained on ({kind};" in unseen_text
    assert "| unseen types: constraints met, neither degenerate | unseen types: gain over base there |" in unseen_text
    row = next(line for line in unseen_text.splitlines() if line.startswith("| sppo | 2 |"))
    assert row.count("(") == 10, "two more figures, each with each seed's value"
