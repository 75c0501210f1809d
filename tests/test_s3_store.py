"""The smoke iteration against a real S3 server on 127.0.0.1 (moto, bucket versioning on), an S3 outage
in the middle of a stage, and corrupted artifacts that must be detected, never used."""

import json
import shutil
import threading
import time

import pytest

from flows.sppo_iteration import sppo_iteration
from sppo.artifacts import STAGES
from sppo.config import load_recipe
from sppo.stages.rank import rank
from sppo.store import CACHE, ArtifactStore, CorruptArtifactError, RunLayout

from .conftest import REPO
from .s3_server import moto_s3

SMOKE = str(REPO / "configs" / "smoke.yaml")
BUCKET = "sppo-artifacts"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    import s3fs

    with pytest.MonkeyPatch.context() as env, moto_s3(BUCKET) as relay:
        env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        s3fs.S3FileSystem.clear_instance_cache()
        yield relay
        s3fs.S3FileSystem.clear_instance_cache()


def overrides(prefix: str) -> list[str]:
    return [f"store=s3://{BUCKET}/{prefix}", f"data.prompts={REPO / 'data' / 'prompts.jsonl'}"]


@pytest.fixture(scope="module")
def s3_run(s3):
    out = sppo_iteration(run="smoke", iteration=1, config=SMOKE, overrides=overrides("plain"))
    return RunLayout(ArtifactStore(f"s3://{BUCKET}/plain"), "smoke"), out


def test_iteration_commits_every_stage_to_s3(s3_run):
    layout, out = s3_run
    assert out == layout.stage_url(1, "evaluate")
    for iteration, stage in [(0, "model"), *((1, s) for s in STAGES)]:
        url = layout.stage_url(iteration, stage)
        manifest = layout.store.manifest(url)
        assert manifest is not None, url
        assert all(layout.store.exists(f"{url}/{name}") for name in manifest.outputs)
    metrics = json.loads(layout.store.read_bytes(f"{layout.stage_url(1, 'evaluate')}/metrics.json"))
    assert metrics["vs_base"]["n"] == 8
    assert not layout.store.exists(f"{layout.iteration_url(1)}.lock")
    # The UI's plot: a PNG in the store, which the image artifact reaches through a presigned URL.
    assert layout.store.read_bytes(layout.store.join("smoke", "ui", "metrics-iter-001.png")).startswith(b"\x89PNG")


def test_corrupted_or_missing_artifact_is_detected(s3_run):
    layout, _ = s3_run
    store = layout.store
    generate = layout.stage_url(1, "generate")
    original = store.read_bytes(f"{generate}/generations.parquet")
    recipe = load_recipe(SMOKE, overrides("plain"))
    scratch_run = f"s3://{BUCKET}/plain/smoke/iter-001/rank-check"
    try:
        store.put_bytes(f"{generate}/generations.parquet", original[: len(original) // 2])  # truncated
        for cached in CACHE.glob("*"):  # drop verified local copies, as on a new machine
            if cached.is_dir() and cached.name != "scratch":
                shutil.rmtree(cached)
        with pytest.raises(CorruptArtifactError, match=r"generations\.parquet has \d+ bytes, its manifest says"):
            rank(recipe, generate, scratch_run)
        flipped = bytes([original[0] ^ 0xFF]) + original[1:]  # same size, other content
        store.put_bytes(f"{generate}/generations.parquet", flipped)
        with pytest.raises(CorruptArtifactError, match=r"generations\.parquet does not match the sha256"):
            rank(recipe, generate, scratch_run)
        store.remove(f"{generate}/generations.parquet")
        with pytest.raises(CorruptArtifactError, match=r"generations\.parquet is listed in its manifest but missing"):
            rank(recipe, generate, scratch_run)
    finally:
        store.put_bytes(f"{generate}/generations.parquet", original)
    assert not store.exists(scratch_run)


def test_stage_survives_an_s3_outage(s3):
    store = ArtifactStore(f"s3://{BUCKET}/outage")
    layout = RunLayout(store, "smoke")

    def cut_during_generate():
        # The generate stage computes in a local scratch folder, then uploads: take S3 away while it
        # computes and keep it away for a few seconds, so the upload meets a dead endpoint.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (CACHE / "scratch").exists() and any((CACHE / "scratch").glob("*/generations.parquet")):
                break
            time.sleep(0.01)
        s3.down = True
        time.sleep(4)
        s3.down = False

    cutter = threading.Thread(target=cut_during_generate, daemon=True)
    cutter.start()
    sppo_iteration(run="smoke", iteration=1, config=SMOKE, overrides=overrides("outage"))
    cutter.join()
    assert s3.refused > 0, "the outage never hit a request"
    assert store.manifest(layout.stage_url(1, "generate")) is not None
    assert store.manifest(layout.stage_url(1, "evaluate")) is not None


def test_only_one_writer_per_iteration_on_s3(s3):
    from sppo.iteration import IterationLocked, iteration_lock

    store = ArtifactStore(f"s3://{BUCKET}/locks")
    url = store.join("smoke", "iter-001.lock")
    with iteration_lock(store, url):
        with pytest.raises(IterationLocked, match="another run of this iteration is writing"):
            with iteration_lock(store, url):
                pass
    assert not store.exists(url)
