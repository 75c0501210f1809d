"""`python -m sppo runs | show | compare | best` on a real store layout written by hand (no training)."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest

from sppo.__main__ import main
from sppo.store import ArtifactStore, Manifest, RunLayout

SAMPLE = "Write a haiku about rain."


def _stage(store: ArtifactStore, url: str, stage: str, files: dict[str, bytes], inputs=None, **info) -> None:
    for name, data in files.items():
        store.put_bytes(f"{url}/{name}", data)
    manifest = Manifest(
        stage=stage,
        fingerprint="f" * 16,
        inputs=inputs or {"previous": "a" * 64},
        outputs={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        rows=info.pop("rows", 8),
        seconds=1.5,
        code_version="abc1234",
        created="2024-05-01T12:00:00Z",
        info=info,
    )
    store.put_bytes(f"{url}/manifest.json", manifest.to_bytes())


def _metrics(vs_ref: float, vs_base: float, tokens: float, passing: float) -> bytes:
    def h2h(rate):
        return {"win_rate": rate, "ci95_low": rate - 0.1, "ci95_high": rate + 0.1, "mean_preference": rate,
                "wins": 5, "ties": 2, "losses": 3, "n": 10}  # fmt: skip

    def stats(t, p):
        return {"mean_response_tokens": t, "mean_response_words": t * 0.75, "empty_rate": 0.0,
                "constraint_pass_rate": p, "prompt_pass_rate": p / 2}  # fmt: skip

    return json.dumps(
        {
            "prompts": 10,
            "judge": "rule",
            "vs_reference": h2h(vs_ref),
            "vs_base": h2h(vs_base),
            "policy": stats(tokens, passing),
            "reference": stats(40.0, 0.5),
            "base": stats(40.0, 0.5),
            "samples": [{"prompt": SAMPLE, "policy": "drops", "reference": "rain", "base": "rain"}],
        }
    ).encode()


@pytest.fixture
def root(tmp_path) -> str:
    return build_store(tmp_path / "store")


def build_store(where) -> str:
    """Run `demo`: base, two full iterations (iteration 1 with a superseded rank), iteration 3 still being
    written (generate done, rank unfinished, locked); run `other`: only a base model."""
    store = ArtifactStore(where)
    demo = RunLayout(store, "demo")
    _stage(store, demo.model_url(0), "model", {"model.safetensors": b"base"}, source="random")
    for it, (ref, base, tokens, passing, losses) in {
        1: (0.62, 0.62, 48.0, 0.55, (0.693, 0.41, 0.52)),
        2: (0.58, 0.71, 55.5, 0.6, (0.69, 0.35, 0.47)),
    }.items():
        for stage in ("generate", "rank", "dataset"):
            _stage(store, demo.stage_url(it, stage), stage, {f"{stage}.parquet": f"{stage}{it}".encode()})
        first, final, mean = losses
        model = {"model.safetensors": f"pi{it}".encode()}
        _stage(store, demo.model_url(it), "model", model, first_loss=first, final_loss=final, mean_loss=mean)
        metrics = {"metrics.json": _metrics(ref, base, tokens, passing)}
        scored = {"policy": store.manifest_digest(demo.model_url(it))}
        _stage(store, demo.stage_url(it, "evaluate"), "evaluate", metrics, scored, win_rate_vs_reference=ref)
    old = demo.stage_url(1, "rank") + ".superseded-20240501T110000"
    _stage(store, old, "rank", {"preferences.parquet": b"old"})
    _stage(store, demo.stage_url(3, "generate"), "generate", {"generations.parquet": b"g3"})
    store.put_bytes(demo.stage_url(3, "rank") + "/preferences.parquet", b"half")  # crashed: no manifest
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": "2024-05-01T13:00:00Z"}
    store.put_bytes(f"{demo.iteration_url(3)}.lock", json.dumps(holder).encode())
    _stage(store, RunLayout(store, "other").model_url(0), "model", {"model.safetensors": b"b"})
    return str(where)


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(start))


def test_runs_lists_stage_status_locks_and_superseded(root, capsys):
    rc, out, _ = _run(capsys, "runs", "--store", root)
    assert rc == 0
    assert "run demo: 4 iteration folder(s), no best marked" in out and "run other:" in out
    assert _row(out, "000").split() == ["000", "-", "-", "-", "done", "-", "-", "-"]
    assert _row(out, "001").split() == ["001", "done", "done", "done", "done", "done", "-", "rank:1"]
    assert _row(out, "003").split() == ["003", "done", "unfinished", "missing", "missing", "missing", "LOCKED", "-"]
    assert f"iter-003 is locked by pid {os.getpid()}" in out and "being written" in out


def test_store_comes_from_the_recipe(root, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"store: {root}\n")
    rc, out, _ = _run(capsys, "runs", "--config", str(recipe), "other")
    assert rc == 0 and "run other:" in out and "run demo" not in out


def test_show_one_stage_and_a_whole_iteration(root, capsys):
    rc, out, _ = _run(capsys, "show", "--store", root, "demo", "1", "evaluate")
    assert rc == 0
    assert "demo/iter-001/evaluate: done" in out and "manifest_sha256" in out and "metrics.json" in out
    assert "vs previous model" in out and "0.620 [0.520, 0.720]" in out and "5/2/3" in out
    assert SAMPLE not in out and "1 sample(s) not shown; pass --samples" in out
    rc, out, _ = _run(capsys, "show", "--store", root, "demo", "iter-001", "evaluate", "--samples")
    assert rc == 0 and SAMPLE in out

    rc, out, _ = _run(capsys, "show", "--store", root, "demo", "003")
    assert rc == 0 and "iter-003 is locked" in out
    assert _row(out, "rank").split()[:2] == ["rank", "unfinished"]
    assert _row(out, "generate").split()[:2] == ["generate", "done"]
    rc, out, _ = _run(capsys, "show", "--store", root, "demo", "1")
    assert "superseded: rank x1" in out and "win/tie/loss" in out


def test_compare_and_best(root, capsys):
    rc, out, _ = _run(capsys, "compare", "--store", root, "demo")
    assert rc == 0, out
    row2 = _row(out, "002")
    assert "0.580 [0.480, 0.680]" in row2 and "0.710 [0.610, 0.810]" in row2
    assert "0.600" in row2 and "55.5" in row2 and "0.690/0.350/0.470" in row2
    assert _row(out, "000 base").split()[5:7] == ["0.500", "40.0"]  # the base's own answers
    assert _row(out, "003").split()[1] == "missing" and "best: none marked" in out

    rc, out, err = _run(capsys, "best", "--store", root, "demo", "2")
    assert rc == 0, err
    store = ArtifactStore(root)
    model = RunLayout(store, "demo").model_url(2)
    pointer = json.loads(store.read_bytes(store.join("demo", "BEST.json")))
    assert pointer["iteration"] == 2 and pointer["model"] == model
    assert pointer["manifest_sha256"] == store.manifest_digest(model) and pointer["marked"].endswith("Z")

    rc, out, _ = _run(capsys, "compare", "--store", root, "demo")
    assert _row(out, "002").rstrip().endswith("*") and not _row(out, "001").rstrip().endswith("*")
    rc, out, _ = _run(capsys, "best", "--store", root, "demo")
    assert rc == 0 and '"iteration": 2' in out and "still matches" in out

    _stage(store, model, "model", {"model.safetensors": b"retrained"})  # the model was replaced
    rc, out, err = _run(capsys, "best", "--store", root, "demo")
    assert rc == 1 and "WARNING: best pointer is stale" in err and "changed since it was marked" in err
    rc, out, err = _run(capsys, "compare", "--store", root, "demo")
    assert rc == 0 and "* (stale)" in _row(out, "002") and "no longer matches" in err
    assert _row(out, "002").split()[1] == "stale" and "evaluate scored a model that has since been replaced" in err


def test_user_errors_exit_2_and_name_what_is_missing(root, capsys):
    rc, _, err = _run(capsys, "compare", "--store", root, "nope")
    assert rc == 2 and "run 'nope' not found in store" in err and root in err and "demo, other" in err
    rc, _, err = _run(capsys, "best", "--store", root, "demo", "3")
    assert rc == 2 and "cannot mark iteration 3 of run 'demo'" in err and "no model folder" in err
    assert not ArtifactStore(root).exists(ArtifactStore(root).join("demo", "BEST.json"))
    rc, _, err = _run(capsys, "best", "--store", root, "demo", "7")
    assert rc == 2 and "run 'demo' has no iteration 7" in err and "000, 001, 002, 003" in err
    rc, _, err = _run(capsys, "show", "--store", root, "demo", "3", "model")
    assert rc == 2 and "no finished model stage" in err
    rc, _, err = _run(capsys, "show", "--store", root, "demo", "3", "rank")
    assert rc == 2 and "unfinished, or crashed" in err
    rc, _, err = _run(capsys, "best", "--store", root, "other")
    assert rc == 2 and "no best iteration marked" in err
    rc, _, err = _run(capsys, "runs", "--store", root + "/missing")
    assert rc == 2 and "does not exist" in err
    rc, _, err = _run(capsys, "prepare-base", "--config", root + "/no-such-recipe.yaml")
    assert rc == 2 and "does not exist" in err


def test_same_commands_on_s3(tmp_path, capsys, monkeypatch):
    import s3fs

    from .s3_server import moto_s3

    with moto_s3("runs") as relay:
        for key, value in {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            root = build_store("s3://runs/store")
            rc, out, _ = _run(capsys, "runs", "--store", root)
            assert rc == 0 and "run other:" in out
            assert _row(out, "001").split() == ["001", "done", "done", "done", "done", "done", "-", "rank:1"]
            assert _row(out, "003").split()[2] == "unfinished" and "LOCKED" in _row(out, "003")
            rc, out, err = _run(capsys, "best", "--store", root, "demo", "1")
            assert rc == 0 and json.loads(ArtifactStore(root).read_bytes(f"{root}/demo/BEST.json"))["iteration"] == 1
            rc, out, _ = _run(capsys, "compare", "--store", root, "demo")
            assert rc == 0 and _row(out, "001").rstrip().endswith("*") and "0.620 [0.520, 0.720]" in out
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
