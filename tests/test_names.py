"""Run names and store URLs from users are checked before they become paths."""

import pytest

from sppo.names import InvalidNameError, check_run_name, check_store_url
from sppo.store import ArtifactStore, RunLayout


@pytest.mark.parametrize("name", ["default", "cpu-sppo", "exp_1.2", "A9", "r" * 64])
def test_valid_run_names(name):
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "/srv/x", "a/b", ".hidden", "-x", "a b", "r" * 65, None, 3])
def test_invalid_run_names(name):
    with pytest.raises(InvalidNameError, match="is not allowed"):
        check_run_name(name)


def test_every_run_path_is_checked(tmp_path):
    with pytest.raises(InvalidNameError):
        RunLayout(ArtifactStore(tmp_path), "../escape")


@pytest.mark.parametrize(
    "url", ["artifacts", "/srv/sppo", "./a/b", "file:///srv/sppo", "s3://bucket", "s3://b-1.x/p/q"]
)
def test_valid_store_urls(url):
    assert check_store_url(url) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3:/bucket", "mistyped URL"),
        ("gs://bucket", "unknown scheme"),
        ("file://relative", "absolute path"),
        ("s3://UPPER", "not a valid S3 bucket"),
        ("s3://bucket/../x", "'..'"),
        ("{{ $SPPO_STORE }}", "set the environment variable SPPO_STORE"),
    ],
)
def test_invalid_store_urls(url, says):
    with pytest.raises(InvalidNameError, match=says):
        check_store_url(url)


def test_every_deployment_names_a_valid_run():
    from pathlib import Path

    import yaml

    deployments = yaml.safe_load((Path(__file__).resolve().parent.parent / "prefect.yaml").read_text())["deployments"]
    for deployment in deployments:
        check_run_name(deployment["parameters"]["run"])
