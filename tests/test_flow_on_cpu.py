"""The sppo-iteration flow end to end on configs/smoke.yaml, twice, in Prefect's temporary local API."""

import json
from pathlib import Path

import datasets
import pytest

from flows.sppo_iteration import sppo_iteration
from sppo.artifacts import GENERATIONS, PAIRS, PREFERENCES, STAGES, read_rows
from sppo.iteration import IterationError
from sppo.store import ArtifactStore, RunLayout

from .conftest import REPO

SMOKE = str(REPO / "configs" / "smoke.yaml")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    overrides = [f"store={store}", f"data.prompts={REPO / 'data' / 'prompts.jsonl'}"]
    first = sppo_iteration(run="smoke", iteration=1, config=SMOKE, overrides=overrides)
    second = sppo_iteration(run="smoke", iteration=2, config=SMOKE, overrides=overrides)
    return RunLayout(ArtifactStore(store), "smoke"), overrides, (first, second)


def _no_nan(name: str):
    raise AssertionError(f"metrics.json holds {name}: not valid JSON")


def _artifacts(key: str) -> list:
    """Every version of an artifact key, newest first (the temporary API's database outlives a session)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )


@pytest.mark.parametrize("iteration", [1, 2])
def test_every_stage_committed_with_the_right_schema(smoke_run, iteration):
    layout, _, _ = smoke_run
    for stage in STAGES:
        manifest = layout.store.manifest(layout.stage_url(iteration, stage))
        assert manifest is not None and manifest.stage == stage

    def stage(iteration: int, name: str) -> Path:
        return Path(layout.stage_url(iteration, name))

    generations = read_rows(stage(iteration, "generate") / "generations.parquet", GENERATIONS)
    assert len(generations) == 8 and all(len(r["responses"]) == 4 for r in generations)
    assert len(read_rows(stage(iteration, "rank") / "preferences.parquet", PREFERENCES)) == 8
    pairs = read_rows(stage(iteration, "dataset") / "train.parquet", PAIRS)
    assert len(pairs) == 8 and all(0.0 <= p["chosen_probs"] <= 1.0 for p in pairs)
    # The training file is what HF datasets (and so TRL or the uclaml/SPPO scripts) can read.
    loaded = datasets.load_dataset("parquet", data_files=str(stage(iteration, "dataset") / "train.parquet"))
    assert set(PAIRS.names) <= set(loaded["train"].column_names)
    assert (stage(iteration, "model") / "model.safetensors").is_file()
    trained = layout.store.manifest(layout.stage_url(iteration, "model")).info
    assert trained["epochs"] == 1 and trained["steps"] == 4, "8 pairs in steps of 2, one epoch (bench.limits)"
    metrics = json.loads((stage(iteration, "evaluate") / "metrics.json").read_text(), parse_constant=_no_nan)
    assert all(set(s["verdict"]) == {"vs_reference", "vs_base"} for s in metrics["samples"])
    assert {s["verdict"]["vs_reference"] for s in metrics["samples"]} <= {"win", "tie", "loss"}
    for key in ("vs_reference", "vs_base"):
        assert (
            metrics[key]["n"] == 8 and metrics[key]["ci95_low"] <= metrics[key]["win_rate"] <= metrics[key]["ci95_high"]
        )
    assert metrics["policy"]["mean_response_tokens"] > 0


def test_iteration_two_starts_from_and_is_referenced_to_iteration_one(smoke_run):
    layout, _, _ = smoke_run
    store, iter1_model = layout.store, layout.model_url(1)
    assert store.manifest(layout.stage_url(2, "generate")).inputs["policy"] == store.manifest_digest(iter1_model)
    trained = store.manifest(layout.model_url(2))
    assert trained.inputs["reference"] == store.manifest_digest(iter1_model)
    assert trained.info["reference"] == iter1_model
    evaluated = store.manifest(layout.stage_url(2, "evaluate"))
    assert evaluated.inputs["reference"] == store.manifest_digest(iter1_model)
    assert evaluated.inputs["base"] == store.manifest_digest(layout.model_url(0))


def test_rerunning_an_iteration_redoes_nothing(smoke_run):
    layout, overrides, _ = smoke_run

    def manifests() -> dict[str, bytes]:
        return {s: layout.store.read_bytes(f"{layout.stage_url(2, s)}/manifest.json") for s in STAGES}

    before = manifests()
    published = {key: len(_artifacts(key)) for key in ("smoke-metrics", "smoke-plot", "smoke-samples")}
    sppo_iteration(run="smoke", iteration=2, config=SMOKE, overrides=overrides)
    assert before == manifests()
    # A re-run that did no work publishes nothing: each key's history stays one version per iteration.
    assert published == {key: len(_artifacts(key)) for key in published}


def test_each_iteration_publishes_its_artifacts_under_the_runs_keys(smoke_run):
    from sppo.report import collect

    layout, _, _ = smoke_run
    table, plot, samples = (_artifacts(f"smoke-{name}")[0] for name in ("metrics", "plot", "samples"))
    assert table.flow_run_id == plot.flow_run_id == samples.flow_run_id, "published together, by iteration 2"
    rows = json.loads(table.data)
    assert [r["iteration"] for r in rows] == [str(r.iteration) for r in collect(layout.store, {"smoke": "smoke"})]
    assert [r["iteration"] for r in rows] == ["1", "2"] and "nan" not in table.data.lower()
    assert "iteration 2" in samples.data and "**Verdict:" in samples.data
    assert plot.data.startswith("data:image/png;base64,")


def test_flow_runs_are_named_after_the_run_and_iteration():
    from flows.sppo_campaign import sppo_campaign
    from flows.sppo_iteration import run_name

    assert run_name("smoke", 3) == "smoke-iter-003" and run_name("smoke", "next") == "smoke-iter-next"
    assert sppo_campaign.flow_run_name.format(run="smoke", iterations=3) == "smoke-iters-1-3"


def test_diagnose_measures_what_an_iteration_taught_and_how_far_it_moved(smoke_run):
    import math

    from sppo.config import load_recipe
    from sppo.diagnose import diagnose, render

    layout, overrides, _ = smoke_run
    report = diagnose(load_recipe(SMOKE, overrides), layout, 2)
    pairs = read_rows(layout.store.local_copy(layout.stage_url(2, "dataset")) / "train.parquet", PAIRS)
    assert report["pairs"]["pairs"] == report["shift"]["pairs"] == len(pairs)
    assert sum(report["pairs"]["separated_by"].values()) == pytest.approx(1.0)
    shift = report["shift"]
    assert all(math.isfinite(v) for v in shift.values() if v is not None) and shift["kl_own"] is not None
    assert shift["target_chosen"] >= shift["target_rejected"], "chosen has the higher win rate"
    assert "what separates chosen from rejected" in render(report)
    # Constraints met per type on the held-out prompts, and how many training prompts asked for each type.
    from sppo.prompts import load_splits

    held_out = load_splits(load_recipe(SMOKE, overrides).data).evaluation
    types = {r["type"]: r for r in report["types"]}
    assert sum(r["held_out_prompts"] for r in types.values()) == sum(len(p.constraints) for p in held_out)
    generate = layout.store.local_copy(layout.stage_url(2, "generate"))
    generations = read_rows(generate / "generations.parquet", GENERATIONS)
    asked = [c["type"] for g in generations for c in json.loads(g["constraints"] or "[]")]
    assert all(r["trained_prompts"] == asked.count(kind) for kind, r in types.items())
    assert all(0.0 <= r["met_before"] <= 1.0 and 0.0 <= r["met_after"] <= 1.0 for r in types.values())
    assert "by type" in render(report)


def test_evaluate_reports_prompts_of_constraint_types_never_trained_on_apart(smoke_run):
    from sppo.answer_cache import cached_answers
    from sppo.config import load_recipe
    from sppo.evaluation import response_stats
    from sppo.metrics_table import iteration_row
    from sppo.prompts import carries_type, load_splits
    from sppo.stages.evaluate import evaluate

    layout, overrides, _ = smoke_run
    held_out = load_splits(load_recipe(SMOKE, overrides).data).evaluation
    kind = held_out[0].constraints[0]["type"]
    recipe = load_recipe(SMOKE, [*overrides, f"data.holdout_constraint_types=[{kind}]"])
    splits = load_splits(recipe.data)
    assert splits.evaluation == held_out, "the same held-out prompts with and without the held-out types"
    assert splits.training_pool and not any(carries_type(p, [kind]) for p in splits.training_pool)

    # Iteration 1's evaluation again with the held-out type: its answers come from the answer cache.
    out = layout.store.join("smoke", "holdout-check", "evaluate")
    evaluate(recipe, layout.model_url(1), layout.model_url(0), layout.model_url(0), out, layout.answers_url())
    metrics = json.loads(layout.store.read_bytes(f"{out}/metrics.json"))
    before = json.loads(layout.store.read_bytes(f"{layout.stage_url(1, 'evaluate')}/metrics.json"))
    assert metrics["vs_base"] == before["vs_base"] and metrics["policy"] == before["policy"]

    unseen, seen = metrics["unseen_types"], metrics["seen_types"]
    carriers = [carries_type(p, [kind]) for p in held_out]
    assert unseen["types"] == [kind] and unseen["prompts"] == sum(carriers) >= 1
    assert unseen["prompts"] + seen["prompts"] == len(held_out)
    for key in ("vs_base", "vs_reference"):
        for count in ("wins", "ties", "losses"):
            assert unseen[key][count] + seen[key][count] == metrics[key][count]
        assert unseen[key]["n"] == unseen["prompts"]
    answers = cached_answers(layout.store, layout, layout.model_url(1))
    mine = [p for p, c in zip(held_out, carriers, strict=True) if c]
    expected = response_stats(mine, [answers[p.id] for p in mine], [1] * len(mine))
    assert unseen["policy"]["constraint_pass_rate"] == expected["constraint_pass_rate"]

    row = iteration_row(1, metrics, None, {})
    assert row["unseen types: prompts"] == str(sum(carriers))
    assert "unseen types: prompts" not in iteration_row(1, before, None, {}), "no new columns without the field"


def test_next_iteration_is_the_first_without_a_committed_evaluate(smoke_run):
    from sppo.iteration import next_iteration

    layout, _, _ = smoke_run
    assert next_iteration(layout, 5) == 3
    assert next_iteration(layout, 2) is None
    assert next_iteration(RunLayout(layout.store, "fresh"), 3) == 1
    # An iteration that stopped before evaluate committed is the next one, whatever it left behind.
    chain = RunLayout(layout.store, "chain")
    for stage in ("generate", "model", "evaluate"):
        layout.store.copy_stage(layout.stage_url(1, stage), chain.stage_url(1, stage))
    layout.store.copy_stage(layout.stage_url(2, "generate"), chain.stage_url(2, "generate"))
    assert next_iteration(chain, 3) == 2


def test_next_past_max_iterations_completes_saying_so(smoke_run):
    from prefect.client.orchestration import get_client

    layout, overrides, _ = smoke_run
    run_folder = Path(layout.store.path_of(layout.store.join("smoke")))
    before = sorted(run_folder.rglob("*"))
    state = sppo_iteration(
        run="smoke", iteration="next", config=SMOKE, overrides=[*overrides, "max_iterations=2"], return_state=True
    )
    assert state.is_completed() and state.result() is None
    assert state.message.startswith("run 'smoke' has finished all 2 iterations of its recipe (max_iterations)")
    assert sorted(run_folder.rglob("*")) == before, "nothing was written"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(state.state_details.flow_run_id).name == "smoke-iter-next"


def test_command_line_next_runs_the_first_unfinished_iteration(smoke_run, capsys):
    from flows.sppo_iteration import main

    _, overrides, _ = smoke_run
    args = ["--run", "smoke", "--iteration", "next", "--config", SMOKE]
    assert main([*args, *(f"--set={o}" for o in [*overrides, "max_iterations=2"])]) == 0
    assert "has finished all 2 iterations" in capsys.readouterr().out
    assert main([*args, "--set", "max_iterations=x", *(f"--set={o}" for o in overrides)]) == 2
    with pytest.raises(SystemExit, match="2"):
        main(["--run", "smoke", "--iteration", "last", "--config", SMOKE])
    assert "expected a number or 'next', got 'last'" in capsys.readouterr().err


def test_iteration_without_previous_model_fails_clearly(smoke_run):
    _, overrides, _ = smoke_run
    with pytest.raises(IterationError, match=r"iteration 3 starts from iteration 2's trained model.*ITER=2 RUN=other"):
        sppo_iteration(run="other", iteration=3, config=SMOKE, overrides=overrides)


def test_command_line_reports_mistakes_without_a_traceback(tmp_path, capsys):
    from flows.sppo_iteration import main

    code = main(
        ["--run", "fresh", "--iteration", "2", "--config", SMOKE, "--lock-wait", "0", "--set", f"store={tmp_path}"]
    )
    assert code == 2
    assert "error: iteration 2 starts from iteration 1's trained model" in capsys.readouterr().err


def test_tasks_retry_crashes_but_not_mistakes():
    from prefect import flow, task

    from tasks.stages import STAGE, _reported

    calls = {"mistake": 0, "crash": 0}

    @task(**{**STAGE, "retry_delay_seconds": 0})
    def mistake():
        calls["mistake"] += 1
        with _reported("train"):
            raise ValueError("bad recipe field")

    @task(**{**STAGE, "retry_delay_seconds": 0})
    def crash_once():
        calls["crash"] += 1
        if calls["crash"] == 1:
            with _reported("generate"):
                raise OSError("store unreachable")
        return "ok"

    @flow
    def both():
        assert crash_once() == "ok"
        with pytest.raises(ValueError):
            mistake()

    both()
    assert calls == {"mistake": 1, "crash": 2}


def test_a_failed_stage_is_one_error_line_naming_the_stage_the_cause_and_what_to_do():
    from prefect import flow, task
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogWorker

    from sppo.config import ConfigError
    from tasks.stages import STAGE, _reported

    cause = "train.deepspeed.config: configs/deepspeed/none.json does not exist"

    @task(name="train", **{**STAGE, "retry_delay_seconds": 0})
    def train_stage():
        with _reported("train"):
            raise ConfigError(cause)

    @flow
    def failing():
        train_stage()

    state = failing(return_state=True)
    line = f"train failed: {cause} (not retried: fix what it names and run the iteration again"
    assert state.is_failed() and line in state.message
    APILogWorker.drain_all(timeout=10)
    with get_client(sync_client=True) as client:
        errors = client.read_logs(
            LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]), level=LogFilterLevel(ge_=40)
            ),
            sort=LogSort.TIMESTAMP_ASC,
        )
    assert errors[0].message.startswith(line) and "\n" not in errors[0].message
    # The traceback follows in one entry (Prefect's), holding the cause's own traceback.
    assert any("Traceback" in e.message and f"ConfigError: {cause}" in e.message for e in errors[1:])


def test_changed_recipe_redoes_only_what_depends_on_it_into_a_new_version(smoke_run):
    # Runs last in this module: it replaces iteration 1's model.
    layout, overrides, _ = smoke_run
    store = layout.store
    untouched = {
        s: store.read_bytes(f"{layout.stage_url(1, s)}/manifest.json") for s in ("generate", "rank", "dataset")
    }
    old_model = store.manifest(layout.model_url(1))
    sppo_iteration(run="smoke", iteration=1, config=SMOKE, overrides=[*overrides, "train.learning_rate=2e-4"])
    assert untouched == {s: store.read_bytes(f"{layout.stage_url(1, s)}/manifest.json") for s in untouched}
    new_model = store.manifest(layout.model_url(1))
    assert new_model.fingerprint != old_model.fingerprint
    kept = sorted(Path(layout.iteration_url(1)).glob("model.superseded-*"))
    assert kept and store.manifest(str(kept[-1])) == old_model, "the old model must be kept, not overwritten"
    assert store.manifest(layout.stage_url(1, "evaluate")).inputs["policy"] == store.manifest_digest(
        layout.model_url(1)
    )
