"""Two-iteration campaigns of two losses on the smoke recipe, and the report written from them."""

import json

from flows.sppo_campaign import main
from sppo.report import ANALYSIS_MARKER, collect, write_report
from sppo.store import ArtifactStore

from .conftest import REPO


def test_campaigns_per_loss_and_their_report(tmp_path):
    report = tmp_path / "docs" / "results"
    code = main(
        [
            "--run",
            "c",
            "--iterations",
            "2",
            "--config",
            str(REPO / "configs" / "smoke.yaml"),
            "--losses",
            "sppo",
            "dpo",
            "--report",
            str(report),
            "--set",
            f"store={tmp_path / 'store'}",
            "--set",
            f"data.prompts={REPO / 'data' / 'prompts.jsonl'}",
        ]
    )
    assert code == 0
    store = ArtifactStore(tmp_path / "store")
    results = collect(store, {"sppo": "c-sppo", "dpo": "c-dpo"})
    assert [(r.label, r.iteration) for r in results] == [("sppo", 1), ("sppo", 2), ("dpo", 1), ("dpo", 2)]
    assert store.manifest(f"{tmp_path / 'store'}/c-dpo/iter-002/model").info["loss"] == "dpo"
    text = report.with_suffix(".md").read_text()
    assert text.count("| sppo |") == 2 and text.count("| dpo |") == 2 and "results.png" in text
    assert report.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((tmp_path / "store" / "c-sppo" / "iter-002" / "evaluate" / "metrics.json").read_text())
    assert {"shorter", "similar", "longer"} == set(metrics["vs_base"]["by_length"])
    assert 0.0 <= metrics["policy"]["loop_rate"] <= 1.0
    # Iteration 1's data were sampled once: the dpo run holds the sppo run's stages, manifests and all.
    for stage in ("generate", "rank", "dataset"):
        a, b = (tmp_path / "store" / run / "iter-001" / stage / "manifest.json" for run in ("c-sppo", "c-dpo"))
        assert a.read_bytes() == b.read_bytes()
    # ...and the models trained from them differ by loss only.
    sppo_model, dpo_model = (
        store.manifest(f"{tmp_path / 'store'}/{run}/iter-001/model") for run in ("c-sppo", "c-dpo")
    )
    assert sppo_model.inputs == dpo_model.inputs and sppo_model.outputs != dpo_model.outputs

    # A hand-written analysis below the marker survives regenerating the report.
    md = report.with_suffix(".md")
    md.write_text(md.read_text().replace(ANALYSIS_MARKER, f"{ANALYSIS_MARKER}\nSPPO reading: by hand."))
    write_report(store, {"sppo": "c-sppo", "dpo": "c-dpo"}, report, title="again")
    again = md.read_text()
    assert again.startswith("# again") and again.count("| dpo |") == 2
    assert again.rstrip().endswith("SPPO reading: by hand.")
    assert "| base | 0 |" in again
