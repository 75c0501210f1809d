"""One Ray actor per engine: each builds its worker once (loads the model or the judge), the work units
are dealt round-robin across the actors, and the results come back in the order of the units.

Every engine gets its own placement group, reserved before any actor starts: a tensor-parallel vLLM
engine's GPUs come as one STRICT_PACK group on one node (vLLM's Ray workers take them from the group the
actor runs in), and a cluster too small for the requested engines fails with the numbers instead of
leaving actors pending forever.

Round-robin because generation batches arrive longest first: dealing them out gives every actor a mix
of long and short ones. The results do not depend on the number of actors (sppo.generation: each batch
draws its own seed)."""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from sppo.config import ComputeConfig
from sppo.runner import PLACEMENT_ENV, EngineShape, Progress, Worker

LOCAL_TEMP_DIR = Path(__file__).resolve().parent.parent / ".cache" / "ray"
# The project's Ray token, made once; Ray's own default (~/.ray/auth_token) is shared by every checkout.
TOKEN_FILE = LOCAL_TEMP_DIR / "auth_token"
_connect_lock = threading.Lock()
ONE_CPU = EngineShape(cpus=1.0)


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner may enter (0700), made if missing."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def token_file() -> Path:
    """The project's Ray token file (0600 in a 0700 folder), generated on first use. Concurrent first
    uses agree: the token is written under a private name, then linked into place (link fails if taken)."""
    private_dir(TOKEN_FILE.parent)
    if not TOKEN_FILE.is_file():
        tmp = TOKEN_FILE.with_name(f".{TOKEN_FILE.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, TOKEN_FILE)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    TOKEN_FILE.chmod(0o600)
    return TOKEN_FILE


def token_env() -> dict[str, str]:
    """Where this program and the Ray it starts find their token: the project's token file, unless the
    user set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (a cluster's token, e.g. from a Kubernetes Secret), or
    opted out with RAY_AUTH_MODE=disabled.

    RAY_AUTH_MODE itself is not set here: this process's Ray read it when imported, so connect() turns
    token mode on through Ray (ray.init() does that itself for a local Ray)."""
    if os.environ.get("RAY_AUTH_MODE") == "disabled":
        return {}
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return {}
    return {"RAY_AUTH_TOKEN_PATH": str(token_file())}


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While a local Ray starts: its node address is 127.0.0.1, so every process of it (gcs_server, raylet,
    workers, the dashboard and runtime-env agents) listens on 127.0.0.1 only, not on every interface.

    Ray rewrites a loopback node address (`_node_ip_address="127.0.0.1"`, `--node-ip-address`) to the
    machine's address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is 0 (ray._private.services.
    resolve_ip_for_localhost): then the node address stays loopback and Ray's gRPC servers and agents bind
    to it. The processes Ray starts read the variable; this process read it when it imported Ray, hence
    the constant too. Both are put back after, so a later connect() to a cluster advertises a routable
    address."""
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address`, or start a local Ray (num_cpus logical CPUs) when it is None.

    Either way with token authentication (token_env). A local Ray listens on 127.0.0.1 only and keeps its
    files in .cache/ray (0700). A no-op when this process is already connected; a local Ray lives until
    this process exits."""
    with _connect_lock:
        if ray.is_initialized():
            return
        os.environ.update(token_env())
        if address is None:
            temp_dir = os.environ.get("RAY_TMPDIR") or str(private_dir(LOCAL_TEMP_DIR))
            with loopback_only():
                ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=temp_dir)
        else:
            if "RAY_AUTH_MODE" not in os.environ:
                # Ray turns token mode on by itself only for a local or "auto" cluster, never for an explicit
                # address; this is its own switch (the variable for this process's Ray and its children).
                from ray._private.authentication.authentication_token_setup import _enable_token_auth

                _enable_token_auth()
            ray.init(address=address)


@ray.remote
class EngineActor:
    """Builds its worker on the first call, not in __init__: an exception there then reaches the driver
    as the exception itself (a RayTaskError with its cause), where a failed __init__ only kills the actor."""

    def __init__(self, make_worker: Callable[[], Worker]):
        self.make_worker: Callable[[], Worker] | None = make_worker
        self.worker: Worker | None = None
        self.node_id = ray.get_runtime_context().get_node_id()

    def run(self, units: list[Any]) -> list[Any]:
        if self.worker is None:
            # Inside our placement group: an engine spanning devices (vLLM tensor parallel) puts its shards there.
            os.environ[PLACEMENT_ENV] = "ray"
            self.worker, self.make_worker = self.make_worker(), None
        return self.worker(units)

    def node(self) -> str:
        return self.node_id


def bundles(shape: EngineShape) -> list[dict[str, float]]:
    """The placement group of one engine."""
    if shape.tensor_parallel > 1:
        # One bundle per shard's worker; the actor itself holds nothing and captures them for its children.
        return [{"CPU": 1.0, "GPU": 1.0}] * shape.tensor_parallel
    cpus, gpus = float(shape.cpus), float(shape.gpus)
    return [{"CPU": cpus, "GPU": gpus} if gpus else {"CPU": cpus}]


def actor_options(shape: EngineShape, group: PlacementGroup) -> dict[str, Any]:
    spans = shape.tensor_parallel > 1
    strategy = PlacementGroupSchedulingStrategy(
        placement_group=group,
        placement_group_bundle_index=-1 if spans else 0,
        placement_group_capture_child_tasks=spans,
    )
    if spans:
        return dict(num_cpus=0, num_gpus=0, scheduling_strategy=strategy)
    return dict(num_cpus=shape.cpus, num_gpus=shape.gpus, scheduling_strategy=strategy)


def reserve_engines(count: int, shape: EngineShape, timeout_s: float) -> list[PlacementGroup]:
    """One placement group per engine, all ready, or an error that says what the cluster lacks."""
    strategy = "STRICT_PACK" if shape.tensor_parallel > 1 else "PACK"
    groups = [placement_group(bundles(shape), strategy=strategy) for _ in range(count)]
    try:
        ray.get([g.ready() for g in groups], timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        for g in groups:
            remove_placement_group(g)
        total = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        raise RuntimeError(
            f"the Ray cluster could not place {count} engine(s) of {bundles(shape)} within {timeout_s:.0f} s "
            f"(the cluster has {total} in all): lower compute.generate_workers/rank_workers, "
            "cpus_per_worker/gpus_per_worker or generate.engine.tensor_parallel_size, or add nodes"
        ) from None
    return groups


def actor_failure(err: ray.exceptions.RayError) -> Exception:
    """What a stage raises for an actor that failed: the actor's own exception type where it is a
    ValueError (a mistake in the recipe or the data, which the Prefect tasks do not retry), its message
    and the remote traceback, so the task's log and state name the cause, not only "an actor died"."""
    cause = getattr(err, "cause", None)
    if isinstance(err, ray.exceptions.RayTaskError) and isinstance(cause, BaseException):
        kind = ValueError if isinstance(cause, ValueError) else RuntimeError
        # str(err) is the actor's traceback, headed by the actor's method and pid, in terminal colours.
        remote = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        return kind(f"a Ray actor failed: {type(cause).__name__}: {cause}\n{remote}")
    return RuntimeError(f"a Ray actor failed: {err}")


def map_units(
    make_worker: Callable[[], Worker],
    units: Sequence[Any],
    workers: int,
    shape: EngineShape = ONE_CPU,
    placement_timeout_s: float = 600.0,
    progress: Progress | None = None,
) -> tuple[list[Any], list[str]]:
    """Results for `units` in their order, and the node id of each actor that ran them."""
    units = list(units)
    if not units:
        return [], []
    count = min(workers, len(units))
    groups = reserve_engines(count, shape, placement_timeout_s)
    actors = [EngineActor.options(**actor_options(shape, g)).remote(make_worker) for g in groups]
    try:
        # One call per unit, dealt round-robin. An actor runs its calls one at a time in the order sent, so
        # it does what it would with its whole shard in one call, and each finished unit can be counted.
        calls = {actors[i % count].run.remote([unit]): i for i, unit in enumerate(units)}
        if progress is not None:
            progress(0, len(units))
        results: list[Any] = [None] * len(units)
        waiting = list(calls)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as err:
                    raise actor_failure(err) from err
                if len(out) != 1:
                    raise RuntimeError(f"a worker returned {len(out)} results for 1 work unit")
                results[calls[ref]] = out[0]
            if progress is not None:
                progress(len(units) - len(waiting), len(units))
        node_ids = ray.get([actor.node.remote() for actor in actors])
        return results, node_ids
    finally:
        for actor in actors:
            ray.kill(actor)  # free the model copies now, not when the driver exits
        for group in groups:
            remove_placement_group(group)


@dataclass
class RayRunner:
    """A sppo.runner.Runner over `workers` Ray actors; `node_ids` says where the last call's actors ran."""

    workers: int
    address: str | None = None
    shape: EngineShape = ONE_CPU
    placement_timeout_s: float = 600.0
    local_cpus: int | None = None  # logical CPUs of a Ray started here (address None)
    node_ids: list[str] = field(default_factory=list)

    @classmethod
    def for_stage(cls, compute: ComputeConfig, workers: int, shape: EngineShape) -> RayRunner:
        # A local Ray gets enough logical CPUs for the larger stage: oversubscribing a small machine is
        # slower, actors that can never be placed would wait forever.
        needed = math.ceil(max(compute.generate_workers, compute.rank_workers) * compute.cpus_per_worker)
        return cls(
            workers=workers,
            address=compute.ray_address,
            shape=shape,
            placement_timeout_s=compute.placement_timeout_s,
            local_cpus=max(os.cpu_count() or 1, needed),
        )

    def __call__(
        self, make_worker: Callable[[], Worker], units: Sequence[Any], progress: Progress | None = None
    ) -> list[Any]:
        connect(self.address, self.local_cpus)
        results, self.node_ids = map_units(
            make_worker, units, self.workers, self.shape, self.placement_timeout_s, progress=progress
        )
        return results
