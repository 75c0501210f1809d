"""The presigned S3 URLs in the UI's artifacts live as long as the recipe's publish.presign_seconds
(default one day), presigned by a real S3 endpoint (moto on 127.0.0.1)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlparse

import pytest

from sppo.config import ConfigError, load_recipe
from sppo.store import ArtifactStore, RunLayout
from tasks.artifacts import browser_url, plot_url

from .s3_server import moto_s3
from .test_ui_artifacts import METRICS, _write_iteration


@pytest.fixture(scope="module")
def s3_store():
    import s3fs

    with moto_s3("presign") as relay, pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{relay.port}")
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        s3fs.S3FileSystem.clear_instance_cache()
        yield ArtifactStore("s3://presign/sppo")
        s3fs.S3FileSystem.clear_instance_cache()


def presigned_for(presign: Callable[[], str], seconds: int) -> str:
    """The URL `presign` returns, checked to be valid for `seconds`: SigV4's X-Amz-Expires says so, SigV2's
    Expires (an epoch second) lies `seconds` after the moment of signing, which the clock brackets."""
    before = math.floor(time.time())
    url = presign()
    after = math.ceil(time.time())
    query = parse_qs(urlparse(url).query)
    if "X-Amz-Expires" in query:
        assert int(query["X-Amz-Expires"][0]) == seconds, url
    else:
        assert before + seconds <= int(query["Expires"][0]) <= after + seconds, url
    return url


@pytest.mark.parametrize(("overrides", "seconds"), [([], 86400), (["publish.presign_seconds=3600"], 3600)])
def test_the_recipes_lifetime_reaches_the_presigned_urls(s3_store, overrides, seconds, tmp_path):
    from sppo.report import collect

    recipe = load_recipe(None, overrides)
    assert recipe.publish.presign_seconds == seconds
    layout = RunLayout(s3_store, "presigned")
    link = layout.store.join("presigned", "BEST.json")
    s3_store.put_bytes(link, b"{}")
    presigned_for(lambda: browser_url(s3_store, link, recipe.publish.presign_seconds), seconds)
    # The plot's PNG is put under <run>/ui/, then presigned.
    local = RunLayout(ArtifactStore(tmp_path), "presigned")
    _write_iteration(local, 1, METRICS)
    results = collect(local.store, {"presigned": "presigned"})
    plot = presigned_for(lambda: plot_url(s3_store, layout, results, 1, recipe.publish.presign_seconds), seconds)
    assert urlparse(plot).path.endswith("/presigned/ui/metrics-iter-001.png")


def test_the_default_is_one_day(s3_store):
    presigned_for(lambda: browser_url(s3_store, s3_store.join("x.json")), 86400)


def test_more_than_seven_days_is_refused():
    with pytest.raises(ConfigError, match="publish.presign_seconds"):
        load_recipe(None, ["publish.presign_seconds=700000"])
