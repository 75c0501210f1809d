"""Inspect what a store holds: `python -m sppo runs | show | compare | best`.

Read-only except `best`, which writes one small pointer object, `<run>/BEST.json`, naming an iteration's
model and the sha256 of its manifest (a pointer, never a copy). Works on any store ArtifactStore opens
(a local folder or s3://); imports neither Prefect, Ray nor torch, so it answers in well under a second."""

from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from sppo.iteration import process_alive
from sppo.store import MANIFEST, STAGES, ArtifactStore, CorruptArtifactError, Manifest, RunLayout

BEST_FILE = "BEST.json"
METRICS_FILE = "metrics.json"  # written by sppo.stages.evaluate (not imported: it pulls in torch)
ITER_RE = re.compile(r"^iter-(\d{3,})$")
LOCK_RE = re.compile(r"^iter-(\d{3,})\.lock$")
SUPERSEDED_RE = re.compile(r"^(" + "|".join(STAGES) + r")\.superseded-")
SCRATCH_RE = re.compile(r"^\.(" + "|".join(STAGES) + r")\.tmp$")

DONE, UNFINISHED, MISSING, CORRUPT, NA = "done", "unfinished", "missing", "corrupt", "-"


class RunsError(ValueError):
    """A user error (unknown run, iteration or stage, nothing to show): exit code 2."""


# --------------------------------------------------------------------------------------------- reading


@dataclass
class IterationStatus:
    iteration: int
    stages: dict[str, str]  # stage -> done / unfinished / missing ("-" for stages iteration 0 never has)
    superseded: dict[str, int] = field(default_factory=dict)
    lock: dict[str, Any] | None = None  # the lock object's holder ({} if unreadable); None when unlocked

    @property
    def locked(self) -> bool:
        return self.lock is not None


@dataclass
class RunStatus:
    run: str
    iterations: list[IterationStatus]
    best: dict[str, Any] | None


def where(store: ArtifactStore) -> str:
    """The store root as messages name it: an absolute path for a local folder, the URL otherwise."""
    return store.path_of(store.root) if store.is_local else store.root


def _entries(store: ArtifactStore, url: str) -> dict[str, str]:
    """Names directly under url -> 'directory' or 'file'; {} when url does not exist."""
    path = store.path_of(url)
    store.fs.invalidate_cache(path)  # s3fs caches listings; a CLI reads what is there now
    try:
        listing = store.fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for entry in listing:
        name = posixpath.basename(str(entry["name"]).rstrip("/"))
        if name:
            out[name] = "directory" if entry.get("type") == "directory" else "file"
    return out


def list_runs(store: ArtifactStore) -> list[str]:
    """Folders of the store holding iterations (or a best pointer), sorted."""
    if not store.exists(store.root):
        raise RunsError(f"store {where(store)} does not exist (pass --store or --config)")
    runs = []
    for name, kind in sorted(_entries(store, store.root).items()):
        if kind != "directory" or name.startswith("."):
            continue
        inside = _entries(store, store.join(name))
        if BEST_FILE in inside or any(ITER_RE.match(n) or LOCK_RE.match(n) for n in inside):
            runs.append(name)
    return runs


def require_run(store: ArtifactStore, run: str) -> dict[str, str]:
    """The run folder's entries, or a RunsError naming the run, the store and the runs it does hold."""
    inside = _entries(store, store.join(run)) if run and "/" not in run else {}
    if BEST_FILE in inside or any(ITER_RE.match(n) or LOCK_RE.match(n) for n in inside):
        return inside
    try:
        known = ", ".join(list_runs(store)) or "none"
    except RunsError as err:
        raise RunsError(f"run {run!r} not found: {err}") from None
    raise RunsError(f"run {run!r} not found in store {where(store)} (runs there: {known})")


def _holder(store: ArtifactStore, url: str) -> dict[str, Any]:
    try:
        holder = json.loads(store.read_bytes(url))
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(holder, dict):
        return {}
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        holder["alive"] = process_alive(holder["pid"])
    return holder


def iteration_status(store: ArtifactStore, run: str, iteration: int, lock: bool) -> IterationStatus:
    layout = RunLayout(store, run)
    url = layout.iteration_url(iteration)
    inside = _entries(store, url)
    stages = {}
    for stage in STAGES:
        if stage in inside:
            stages[stage] = DONE if store.exists(f"{url}/{stage}/{MANIFEST}") else UNFINISHED
        elif f".{stage}.tmp" in inside:  # a local stage writing (or crashed) into its scratch folder
            stages[stage] = UNFINISHED
        else:
            stages[stage] = NA if iteration == 0 and stage != "model" else MISSING
    superseded: dict[str, int] = {}
    for name in inside:
        m = SUPERSEDED_RE.match(name)
        if m:
            superseded[m.group(1)] = superseded.get(m.group(1), 0) + 1
    holder = _holder(store, f"{url}.lock") if lock else None
    return IterationStatus(iteration, stages, superseded, holder)


def run_status(store: ArtifactStore, run: str) -> RunStatus:
    inside = require_run(store, run)
    numbers: dict[int, bool] = {}
    for name, kind in inside.items():
        if (m := ITER_RE.match(name)) and kind == "directory":
            numbers.setdefault(int(m.group(1)), False)
        elif m := LOCK_RE.match(name):
            numbers[int(m.group(1))] = True
    iterations = [iteration_status(store, run, n, numbers[n]) for n in sorted(numbers)]
    return RunStatus(run, iterations, read_best(store, run))


def parse_iteration(text: str) -> int:
    m = re.fullmatch(r"(?:iter-)?(\d+)", text.strip())
    if not m:
        raise RunsError(f"iteration must be a number like 1, 001 or iter-001, got {text!r}")
    return int(m.group(1))


def require_iteration(store: ArtifactStore, run: str, iteration: int) -> None:
    status = run_status(store, run)
    numbers = [it.iteration for it in status.iterations]
    if iteration not in numbers:
        known = ", ".join(f"{n:03d}" for n in numbers) or "none"
        raise RunsError(f"run {run!r} has no iteration {iteration} in store {where(store)} (iterations there: {known})")


def read_manifest(store: ArtifactStore, stage_url: str) -> tuple[str, Manifest | None]:
    """(status, manifest): done with its manifest, or unfinished / missing / corrupt without one."""
    try:
        manifest = store.manifest(stage_url)
    except CorruptArtifactError:
        return CORRUPT, None
    if manifest is not None:
        return DONE, manifest
    return (UNFINISHED if store.exists(stage_url) else MISSING), None


def read_metrics(store: ArtifactStore, evaluate_url: str, manifest: Manifest) -> dict[str, Any]:
    """metrics.json of a finished evaluate stage, checked against the sha256 in its manifest."""
    url = f"{evaluate_url}/{METRICS_FILE}"
    try:
        data = store.read_bytes(url)
    except FileNotFoundError:
        raise CorruptArtifactError(
            f"{url} is listed in its manifest but missing; delete {evaluate_url} and rerun"
        ) from None
    expected = manifest.outputs.get(METRICS_FILE)
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise CorruptArtifactError(
            f"{url} does not match the sha256 in its manifest (corrupted or edited); delete {evaluate_url} and rerun"
        )
    try:
        return json.loads(data)
    except ValueError as err:
        raise CorruptArtifactError(f"{url}: unreadable ({err}); delete {evaluate_url} and rerun") from None


def _digest_or_none(store: ArtifactStore, stage_url: str) -> str | None:
    try:
        return hashlib.sha256(store.read_bytes(f"{stage_url}/{MANIFEST}")).hexdigest()
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------------------------------ best


def best_url(store: ArtifactStore, run: str) -> str:
    return store.join(run, BEST_FILE)


def read_best(store: ArtifactStore, run: str) -> dict[str, Any] | None:
    url = best_url(store, run)
    try:
        pointer = json.loads(store.read_bytes(url))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise RunsError(f"{url} is unreadable ({err}); mark the best iteration again") from None
    if not isinstance(pointer, dict) or not isinstance(pointer.get("iteration"), int):
        raise RunsError(f"{url} is not a best pointer; mark the best iteration again")
    return pointer


def mark_best(store: ArtifactStore, run: str, iteration: int) -> dict[str, Any]:
    """Point <run>/BEST.json at iteration's model: its URL and its manifest's sha256, nothing copied."""
    require_iteration(store, run, iteration)
    url = RunLayout(store, run).model_url(iteration)
    status, _ = read_manifest(store, url)
    if status != DONE:
        why = {
            UNFINISHED: "its model folder has no manifest.json (training unfinished or crashed)",
            MISSING: "it has no model folder (training has not run)",
            CORRUPT: "its model manifest is unreadable",
        }[status]
        raise RunsError(
            f"cannot mark iteration {iteration} of run {run!r} as best: {why} at {url} (store {where(store)})"
        )
    pointer = {
        "iteration": iteration,
        "model": store.path_of(url) if store.is_local else url,  # a local pointer must not depend on the cwd
        "manifest_sha256": store.manifest_digest(url),
        "marked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.put_bytes(best_url(store, run), (json.dumps(pointer, indent=2) + "\n").encode())
    return pointer


def check_best(store: ArtifactStore, run: str, pointer: dict[str, Any]) -> list[str]:
    """What no longer holds about a best pointer: [] when the model is still the one that was marked."""
    url = RunLayout(store, run).model_url(pointer["iteration"])
    status, _ = read_manifest(store, url)
    if status != DONE:
        return [f"iteration {pointer['iteration']}'s model at {url} is now {status} (no readable manifest.json)"]
    digest = store.manifest_digest(url)
    if digest != pointer.get("manifest_sha256"):
        then = str(pointer.get("manifest_sha256"))[:12]
        return [
            f"the model manifest at {url} changed since it was marked (sha256 {then} then, {digest[:12]} now): "
            "the model was retrained or replaced; check it and mark it again"
        ]
    return []


# ------------------------------------------------------------------------------------------- formatting


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]
    ]
    lines.insert(1, indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _rate(h2h: dict[str, Any] | None) -> str:
    if not h2h or h2h.get("win_rate") is None:
        return "-"
    return f"{h2h['win_rate']:.3f} [{_num(h2h.get('ci95_low'))}, {_num(h2h.get('ci95_high'))}]"


def _info(info: dict[str, Any], limit: int = 70) -> str:
    text = " ".join(f"{k}={_num(v, 4)}" for k, v in info.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lock_text(it: IterationStatus) -> str:
    holder = it.lock or {}
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
    if holder.get("alive") is False:
        gone = "a process that is gone: a stale lock (the next run of that iteration takes it over)"
        return f"iter-{it.iteration:03d} is locked by {who}, {gone}"
    return f"iter-{it.iteration:03d} is locked by {who}: being written"


def render_runs(store: ArtifactStore, statuses: list[RunStatus]) -> str:
    out = [f"store {where(store)}: {len(statuses)} run(s)"]
    for status in statuses:
        best = f"best iter-{status.best['iteration']:03d}" if status.best else "no best marked"
        out.append(f"\nrun {status.run}: {len(status.iterations)} iteration folder(s), {best}")
        rows = []
        for it in status.iterations:
            superseded = ",".join(f"{s}:{n}" for s, n in sorted(it.superseded.items())) or "-"
            rows.append([f"{it.iteration:03d}", *it.stages.values(), "LOCKED" if it.locked else "-", superseded])
        if rows:
            out.append(table(["iter", *STAGES, "lock", "superseded"], rows))
        out.extend(f"  {_lock_text(it)}" for it in status.iterations if it.locked)
    return "\n".join(out)


def render_metrics(metrics: dict[str, Any], samples: bool) -> str:
    out = [f"  metrics: {metrics.get('prompts', '?')} held-out prompts, judge {metrics.get('judge', '?')}"]
    rows = []
    for key, label in (("vs_reference", "vs previous model"), ("vs_base", "vs base")):
        h = metrics.get(key)
        if isinstance(h, dict):
            rows.append(
                [
                    label,
                    _rate(h),
                    f"{h.get('wins', '?')}/{h.get('ties', '?')}/{h.get('losses', '?')}",
                    _num(h.get("mean_preference")),
                ]
            )
    if rows:
        out.append(table(["policy", "win rate [95%]", "win/tie/loss", "mean pref"], rows, "    "))
    rows = []
    for role in ("policy", "reference", "base"):
        s = metrics.get(role)
        if isinstance(s, dict):
            rows.append(
                [
                    role,
                    _num(s.get("mean_response_tokens"), 1),
                    _num(s.get("mean_response_words"), 1),
                    _num(s.get("empty_rate")),
                    _num(s.get("constraint_pass_rate")),
                    _num(s.get("prompt_pass_rate")),
                ]
            )
    if rows:
        out.append("")
        out.append(
            table(["model", "mean tokens", "mean words", "empty", "constraints met", "prompts passing"], rows, "    ")
        )
    known = {"prompts", "judge", "vs_reference", "vs_base", "policy", "reference", "base", "samples"}
    out.extend(f"  {k}: {json.dumps(v)}" for k, v in metrics.items() if k not in known)
    shown = metrics.get("samples") or []
    if samples:
        for i, sample in enumerate(shown, 1):
            out.append(f"\n  sample {i}")
            for key, text in sample.items():
                body = str(text).replace("\n", "\n      ")
                out.append(f"    {key}:\n      {body}")
    elif shown:
        out.append(f"  ({len(shown)} sample(s) not shown; pass --samples)")
    return "\n".join(out)


def render_stage(store: ArtifactStore, run: str, iteration: int, stage: str, samples: bool) -> str:
    url = RunLayout(store, run).stage_url(iteration, stage)
    status, manifest = read_manifest(store, url)
    if manifest is None:
        what = {
            UNFINISHED: "its folder has no manifest.json: unfinished, or crashed",
            MISSING: "it has not run",
            CORRUPT: "its manifest.json is unreadable; delete that stage folder and rerun",
        }[status]
        raise RunsError(f"run {run!r} iteration {iteration} has no finished {stage} stage at {url}: {what}")
    out = [f"{run}/iter-{iteration:03d}/{stage}: {status}  ({url})", f"  manifest_sha256  {store.manifest_digest(url)}"]
    fields = [
        ("stage", manifest.stage),
        ("created", manifest.created),
        ("seconds", manifest.seconds),
        ("rows", manifest.rows),
        ("code_version", manifest.code_version),
        ("fingerprint", manifest.fingerprint),
    ]
    out.extend(f"  {k:<16} {_num(v, 2)}" for k, v in fields)
    for title, mapping in (("inputs", manifest.inputs), ("outputs", manifest.outputs), ("info", manifest.info)):
        out.append(f"  {title}:" + ("" if mapping else " none"))
        width = max((len(k) for k in mapping), default=0)
        out.extend(f"    {k:<{width}}  {_num(v, 4)}" for k, v in mapping.items())
    if stage == "evaluate":
        out.append(render_metrics(read_metrics(store, url, manifest), samples))
    return "\n".join(out)


def render_iteration(store: ArtifactStore, run: str, iteration: int, samples: bool) -> str:
    layout = RunLayout(store, run)
    it = iteration_status(store, run, iteration, store.exists(f"{layout.iteration_url(iteration)}.lock"))
    out = [f"{run}/iter-{iteration:03d}  ({layout.iteration_url(iteration)})"]
    if it.locked:
        out.append(f"  {_lock_text(it)}")
    rows, evaluate = [], None
    for stage in STAGES:
        url = layout.stage_url(iteration, stage)
        status, manifest = read_manifest(store, url) if it.stages[stage] != NA else (NA, None)
        if manifest is None:
            rows.append([stage, status, "-", "-", "-", "-", ""])
            continue
        if stage == "evaluate":
            evaluate = (url, manifest)
        rows.append(
            [
                stage,
                status,
                manifest.created or "-",
                _num(manifest.rows),
                _num(manifest.seconds, 1),
                str(len(manifest.outputs)),
                _info(manifest.info),
            ]
        )
    out.append(table(["stage", "status", "created", "rows", "seconds", "files", "info"], rows))
    if it.superseded:
        out.append("  superseded: " + ", ".join(f"{s} x{n}" for s, n in sorted(it.superseded.items())))
    if evaluate:
        out.append(render_metrics(read_metrics(store, *evaluate), samples))
    return "\n".join(out)


def render_compare(store: ArtifactStore, run: str) -> tuple[str, list[str]]:
    """The table across iterations, and warnings (for stderr)."""
    status = run_status(store, run)
    layout = RunLayout(store, run)
    warnings: list[str] = []
    best = status.best
    stale = bool(best) and bool(check_best(store, run, best))
    if stale:
        warnings.append(f"warning: {run}/{BEST_FILE} no longer matches its model; run `python -m sppo best {run}`")
    rows, judges, base_stats = [], set(), None
    for it in status.iterations:
        n = it.iteration
        metrics, evaluate = None, it.stages["evaluate"]
        if evaluate == DONE:
            url = layout.stage_url(n, "evaluate")
            try:
                _, manifest = read_manifest(store, url)
                if manifest is None:
                    raise CorruptArtifactError(f"{url}/{MANIFEST} is unreadable")
                metrics = read_metrics(store, url, manifest)
                model_digest = _digest_or_none(store, layout.model_url(n))
                if manifest.inputs.get("policy") not in (None, model_digest):
                    evaluate = "stale"
                    warnings.append(
                        f"warning: iter-{n:03d}'s evaluate scored a model that has since been replaced; "
                        f"rerun iteration {n} to evaluate the current one"
                    )
            except CorruptArtifactError as err:
                warnings.append(f"warning: {err}")
                evaluate = CORRUPT
        _, model = read_manifest(store, layout.model_url(n))
        info = model.info if model else {}
        policy = (metrics or {}).get("policy") or {}
        if metrics:
            judges.add(f"{metrics.get('judge', '?')} on {metrics.get('prompts', '?')} prompts")
            base_stats = base_stats or metrics.get("base")
        loss = "/".join(_num(info.get(k)) for k in ("first_loss", "final_loss", "mean_loss"))
        mark = ("*" + (" (stale)" if stale else "")) if best and best["iteration"] == n else ""
        rows.append(
            [
                f"{n:03d}" + (" base" if n == 0 else ""),
                evaluate if n else "-",
                _rate((metrics or {}).get("vs_reference")),
                _rate((metrics or {}).get("vs_base")),
                _num(policy.get("constraint_pass_rate")),
                _num(policy.get("mean_response_tokens"), 1),
                "-" if loss == "-/-/-" else loss,
                mark,
            ]
        )
    if base_stats and rows and rows[0][0].startswith("000"):  # the base's own answers, as every evaluate scored them
        rows[0][4] = _num(base_stats.get("constraint_pass_rate"))
        rows[0][5] = _num(base_stats.get("mean_response_tokens"), 1)
    headers = ["iter", "evaluate", "vs prev [95%]", "vs base [95%]", "constraints", "tokens", "loss first/final/mean"]
    out = [f"run {run} in {where(store)}", table([*headers, "best"], rows)]
    out.append("  vs prev: pi_t against pi_(t-1); vs base: pi_t against iteration 0's model; ties count 1/2")
    out.append("  constraints: share of constraints met; tokens: mean response length (both of pi_t's answers)")
    if judges:
        out.append("  judged by " + "; ".join(sorted(judges)))
    if best:
        out.append(
            f"  best: iter-{best['iteration']:03d}, marked {best.get('marked', '?')}" + (" (stale)" if stale else "")
        )
    else:
        out.append(f"  best: none marked (python -m sppo best {run} ITER)")
    return "\n".join(out), warnings


# ------------------------------------------------------------------------------------------------- CLI


def add_parsers(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help="store root: a folder or s3://bucket/prefix (default: artifacts)")
    common.add_argument("--config", help="read the store from this recipe's `store` (--store wins)")
    p = sub.add_parser("runs", parents=[common], help="list runs, their iterations and each stage's status")
    p.add_argument("run", nargs="?", help="only this run")
    p = sub.add_parser("show", parents=[common], help="print a stage's manifest (and evaluate's metrics)")
    p.add_argument("run")
    p.add_argument("iteration", help="1, 001 or iter-001")
    p.add_argument("stage", nargs="?", choices=STAGES, help="one stage in full (default: all, compact)")
    p.add_argument("--samples", action="store_true", help="also print evaluate's sample answers")
    p = sub.add_parser("compare", parents=[common], help="win rates, constraints, length and loss per iteration")
    p.add_argument("run")
    p = sub.add_parser("best", parents=[common], help="mark ITER's model as the run's best, or check the mark")
    p.add_argument("run")
    p.add_argument("iteration", nargs="?", help="mark this iteration (omit to print and check the current mark)")


def open_store(args: argparse.Namespace) -> ArtifactStore:
    root = args.store
    if root is None and args.config:
        from sppo.config import ConfigError, load_recipe

        try:
            root = load_recipe(args.config).store
        except ConfigError as err:
            raise RunsError(str(err)) from None
    return ArtifactStore(root or "artifacts")


def run_command(args: argparse.Namespace) -> int:
    """Run one of runs / show / compare / best; user errors print `error: ...` and return 2."""
    try:
        store = open_store(args)
        return _COMMANDS[args.command](store, args)
    except RunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CorruptArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _runs(store: ArtifactStore, args: argparse.Namespace) -> int:
    names = [args.run] if args.run else list_runs(store)
    print(render_runs(store, [run_status(store, name) for name in names]))
    return 0


def _show(store: ArtifactStore, args: argparse.Namespace) -> int:
    iteration = parse_iteration(args.iteration)
    require_iteration(store, args.run, iteration)
    if args.stage:
        print(render_stage(store, args.run, iteration, args.stage, args.samples))
    else:
        print(render_iteration(store, args.run, iteration, args.samples))
    return 0


def _compare(store: ArtifactStore, args: argparse.Namespace) -> int:
    text, warnings = render_compare(store, args.run)
    print(text)
    for warning in warnings:
        print(warning, file=sys.stderr)
    return 0


def _best(store: ArtifactStore, args: argparse.Namespace) -> int:
    if args.iteration is not None:
        iteration = parse_iteration(args.iteration)
        pointer = mark_best(store, args.run, iteration)
        print(f"marked iter-{iteration:03d} as the best of run {args.run}: {best_url(store, args.run)}")
        print(json.dumps(pointer, indent=2))
        status = iteration_status(
            store, args.run, iteration, store.exists(f"{RunLayout(store, args.run).iteration_url(iteration)}.lock")
        )
        if status.locked:
            print(f"warning: {_lock_text(status)}; its model may still be replaced", file=sys.stderr)
        if iteration and status.stages["evaluate"] != DONE:
            print(f"warning: iteration {iteration} has no finished evaluate stage yet", file=sys.stderr)
        return 0
    require_run(store, args.run)
    pointer = read_best(store, args.run)
    if pointer is None:
        raise RunsError(
            f"run {args.run!r} in store {where(store)} has no best iteration marked; "
            f"mark one with `python -m sppo best {args.run} ITER`"
        )
    print(json.dumps(pointer, indent=2))
    problems = check_best(store, args.run, pointer)
    for problem in problems:
        print(f"WARNING: best pointer is stale: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"ok: iter-{pointer['iteration']:03d}'s model manifest still matches (sha256 {pointer['manifest_sha256'][:12]})"
    )
    return 0


_COMMANDS = {"runs": _runs, "show": _show, "compare": _compare, "best": _best}
