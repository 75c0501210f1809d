"""`make lint`'s check of infra/ against the schemas that ship in installed packages (no network):

- infra/ray-up.yaml against Ray's own cluster-config schema (ray/autoscaler/ray-schema.json, the one
  `ray up` validates with);
- the pod templates of infra/ray-cluster.yaml (the head group's and each worker group's) against
  Kubernetes' PodTemplateSpec, strict (an unknown field is an error), from the kubernetes-validate package.

The KubeRay RayCluster CRD itself ships in no PyPI, npm or Debian package, so the fields around the pod
templates (rayStartParams, replicas, ...) are not schema-checked here; tests/test_deployments.py checks
what the pipeline relies on. Exit code 1 with one line per problem."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
# The oldest Kubernetes the manifests should still apply to (KubeRay 1.1 supports 1.23+; the package ships 1.25+).
KUBERNETES = "1.30.0"


def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def pod_template_schema(version: str = KUBERNETES) -> dict:
    import kubernetes_validate

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())
    return {
        "$schema": definitions["$schema"],
        "$ref": "#/$defs/io.k8s.api.core.v1.PodTemplateSpec",
        "$defs": definitions["$defs"],
    }


def problems(validator: jsonschema.protocols.Validator, document: object, where: str) -> Iterator[str]:
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path) or "(top)"
        yield f"{where}: {path}: {error.message}"


def _name(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def check_ray_up(path: Path) -> list[str]:
    config = yaml.safe_load(path.read_text())
    schema = ray_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return list(problems(validator, config, _name(path)))


def check_ray_cluster(path: Path) -> list[str]:
    cluster = yaml.safe_load(path.read_text())
    where = _name(path)
    if cluster.get("kind") != "RayCluster" or not str(cluster.get("apiVersion", "")).startswith("ray.io/"):
        kind, api = cluster.get("kind"), cluster.get("apiVersion")
        return [f"{where}: not a KubeRay RayCluster (kind {kind!r}, apiVersion {api!r})"]
    spec = cluster.get("spec") or {}
    groups = {"spec.headGroupSpec": spec.get("headGroupSpec") or {}}
    for n, group in enumerate(spec.get("workerGroupSpecs") or []):
        groups[f"spec.workerGroupSpecs.{n}"] = group
    schema = pod_template_schema()
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for name, group in groups.items():
        if "template" not in group:
            out.append(f"{where}: {name} has no pod template")
            continue
        out += problems(validator, group["template"], f"{where}: {name}.template")
    return out


def main() -> int:
    found = check_ray_up(REPO / "infra" / "ray-up.yaml") + check_ray_cluster(REPO / "infra" / "ray-cluster.yaml")
    for problem in found:
        print(problem, file=sys.stderr)
    if not found:
        print(f"infra/: ray-up.yaml matches Ray's schema, ray-cluster.yaml's pod templates Kubernetes {KUBERNETES}'s")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
