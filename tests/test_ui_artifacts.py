"""What the Prefect UI shows, built from a store without a server: artifact keys, the metrics table's rows,
the samples markdown, and progress. tests/ui/ checks
the same in a real browser (`make test-ui`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sppo.metrics_table import num, rate
from sppo.store import ArtifactStore, Manifest, RunLayout
from tasks.artifacts import artifact_key, metrics_rows, samples_markdown

KEY_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


@pytest.mark.parametrize("run", ["smoke", "cpu-sppo", "My_Run", "a.b", "..", "Ünïcode run", "x" * 80])
def test_artifact_keys_are_valid_and_distinct(run):
    key = artifact_key(run)
    assert key and set(key) <= KEY_CHARS and not key.startswith("-") and not key.endswith("-")
    if set(run) <= KEY_CHARS and not run.startswith("-"):
        assert key == run  # a name that is already a key is kept as is
    assert artifact_key("my-run") != artifact_key("My_Run")


def test_missing_and_non_finite_values_read_as_a_dash():
    assert [num(None), num(float("nan")), num(float("inf")), num("x"), num(0.5)] == ["-", "-", "-", "-", "0.500"]
    assert rate({"win_rate": None, "ci95_low": None, "ci95_high": None, "n": 0}) == "-"
    assert rate({"win_rate": 0.625, "ci95_low": 0.4, "ci95_high": 0.85, "n": 8}) == "0.625 [0.400, 0.850]"


def _manifest(created: str, stage: str = "generate", seconds: float = 90.0) -> Manifest:
    return Manifest(stage=stage, fingerprint="f", inputs={}, outputs={}, rows=8, seconds=seconds, created=created)


def _write_iteration(layout: RunLayout, iteration: int, metrics: dict) -> None:
    """Stage manifests and an evaluate metrics.json, as the stages commit them (contents elided)."""
    from sppo.artifacts import PAIRS, write_rows

    for stage in ("generate", "rank", "dataset", "model", "evaluate"):
        folder = Path(layout.stage_url(iteration, stage))
        folder.mkdir(parents=True)
        info = {"mean_loss": 0.25} if stage == "model" else {}
        (folder / "manifest.json").write_bytes(
            Manifest(stage, "f", {}, {}, rows=2, seconds=30.0, created="2026-01-01T00:00:00Z", info=info).to_bytes()
        )
    evaluate = Path(layout.stage_url(iteration, "evaluate"))
    (evaluate / "metrics.json").write_text(json.dumps(metrics))
    pair = dict(prompt_id="p", prompt="Say hi | twice", chosen="hi\nhi", rejected="", chosen_probs=0.7)
    write_rows(
        [{**pair, "chosen_probs_win": 0.6, "chosen_probs_lose": 0.4}],
        PAIRS,
        Path(layout.stage_url(iteration, "dataset")) / "train.parquet",
    )


METRICS = {
    "prompts": 8,
    "judge": "rule",
    "vs_reference": {"win_rate": 0.5, "ci95_low": 0.2, "ci95_high": 0.8, "n": 8},
    "vs_base": {
        "win_rate": 0.625,
        "ci95_low": 0.3,
        "ci95_high": 0.9,
        "n": 8,
        "by_length": {"similar": {"win_rate": None, "ci95_low": None, "ci95_high": None, "n": 0}},
    },
    "policy": {"constraint_pass_rate": None, "mean_response_tokens": 12.5, "loop_rate": 0.0, "empty_rate": 0.125},
    "samples": [
        {
            "prompt": "Write *two* words",
            "policy": "# not a heading",
            "reference": "",
            "base": "x",
            "verdict": {"vs_reference": "win", "vs_base": "loss"},
        }
    ],
}


def test_metrics_rows_and_samples_read_as_a_person_reads_them(tmp_path):
    from sppo.report import collect

    layout = RunLayout(ArtifactStore(tmp_path), "r")
    _write_iteration(layout, 1, METRICS)
    rows = metrics_rows(collect(layout.store, {"r": "r"}))
    assert len(rows) == 1 and all(isinstance(v, str) for v in rows[0].values())
    row = rows[0]
    assert row["win vs base [95%]"] == "0.625 [0.300, 0.900]"
    assert row["vs base, similar length [95%]"] == "-" and row["constraints met"] == "-"
    assert (
        row["train loss"] == "0.2500"
        and row["generate min"] == "0.50"
        and row["train min"] == "0.50"
        and "build-parquet min" in row
    )

    text = samples_markdown(layout.store, layout, 1)
    assert "**Verdict: win** against the reference (loss against the base)" in text
    assert "> \\# not a heading" in text and "> Write \\*two\\* words" in text  # shown as written
    assert "> *(empty reply)*" in text
    assert "**Chosen**, win rate 0.600" in text and "**Rejected**, win rate 0.400" in text
    assert "> hi\n> hi" in text and "Say hi \\| twice" in text
    assert "nan" not in text.lower()


def test_progress_artifact_updates_sparingly(monkeypatch):
    import tasks.progress as progress

    calls = []
    monkeypatch.setattr(progress, "create_progress_artifact", lambda p, description: calls.append(("new", p)) or 1)
    monkeypatch.setattr(progress, "update_progress_artifact", lambda i, p: calls.append(("update", p)))
    bar = progress.ProgressArtifact("generate", every_s=3600)
    for done in range(0, 11):
        bar(done, 10)
    assert calls == [("new", 0.0), ("update", 100.0)]  # throttled, but 100% always shows


def test_evaluate_writes_no_nan_for_an_empty_length_bucket():
    from sppo.evaluation import _rate

    empty = _rate(__import__("numpy").array([]))
    assert empty == {"win_rate": None, "ci95_low": None, "ci95_high": None, "n": 0}
    assert not any(isinstance(v, float) and math.isnan(v) for v in empty.values())


def test_a_failed_publish_is_redone_by_the_next_run(tmp_path, monkeypatch):
    import flows.sppo_iteration as flow_module
    import tasks.artifacts as artifacts
    from tasks.stages import StageResult

    from .conftest import REPO

    layout = RunLayout(ArtifactStore(tmp_path), "r")
    _write_iteration(layout, 1, METRICS)
    base = Path(layout.model_url(0))
    base.mkdir(parents=True)
    (base / "manifest.json").write_bytes(_manifest("2026-01-01T00:00:00Z", stage="model").to_bytes())
    reused = {"now": False}
    monkeypatch.setattr(flow_module, "preflight", lambda *a: None)
    # Each stage task "finishes" at its output folder (its last argument; evaluate's second to last, before the
    # answer cache); `reused` says whether an earlier run had made it.
    outs = {"prepare_base": -1, "generate": -1, "rank": -1, "build_dataset": -1, "train": -1, "evaluate": -2}
    for name, out in outs.items():
        monkeypatch.setattr(flow_module, f"{name}_task", lambda *a, out=out: StageResult(a[out], reused["now"]))
    published, api = [], {"down": True}

    def table(**kwargs):
        if api["down"]:
            raise RuntimeError("the Prefect API is unreachable")
        published.append(kwargs["key"])

    monkeypatch.setattr(artifacts, "create_table_artifact", table)
    monkeypatch.setattr(artifacts, "plot_url", lambda *a: "data:image/png;base64,")
    for name in ("create_image_artifact", "create_markdown_artifact", "create_link_artifact"):
        monkeypatch.setattr(artifacts, name, lambda **kwargs: None)

    def run():
        smoke = str(REPO / "configs" / "smoke.yaml")
        return flow_module.sppo_iteration(run="r", iteration=1, config=smoke, overrides=[f"store={tmp_path}"])

    with pytest.raises(RuntimeError, match="unreachable"):
        run()  # did the work, then failed to publish
    api["down"], reused["now"] = False, True
    run()  # reuses every stage: publishes what the failed run left unpublished
    assert published == ["r-metrics"]
    run()
    assert published == ["r-metrics"], "published once: a re-run of a published iteration adds nothing"
