"""Text for the inspection commands: a plain-text table, and render_* for a store's runs, one iteration,
one stage (with evaluate's metrics) and a run's iterations compared side by side."""

from __future__ import annotations

import json
from typing import Any

from sppo.artifacts import MANIFEST, STAGES
from sppo.metrics_table import answer_cells, iteration_row, num, rate
from sppo.runs.best import check_best
from sppo.runs.status import (
    BEST_FILE,
    CORRUPT,
    DONE,
    MISSING,
    NA,
    UNFINISHED,
    IterationStatus,
    RunsError,
    RunStatus,
    iteration_status,
    read_manifest,
    read_metrics,
    run_status,
    where,
)
from sppo.store import ArtifactStore, CorruptArtifactError, RunLayout, StoreError


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [
        indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]
    ]
    lines.insert(1, indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _value(value: Any, digits: int = 3) -> str:
    """A manifest's value as it is: numbers formatted, counts and text unchanged (metrics use metrics_table.num)."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


# The columns of `runs compare`, from sppo.metrics_table's row.
COMPARE_COLUMNS = (
    "win vs previous [95%]",
    "win vs base [95%]",
    "constraints met",
    "mean tokens",
    "loss first/final/mean",
)


def _info(info: dict[str, Any], limit: int = 70) -> str:
    text = " ".join(f"{k}={_value(v, 4)}" for k, v in info.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def lock_text(it: IterationStatus) -> str:
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
        out.extend(f"  {lock_text(it)}" for it in status.iterations if it.locked)
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
                    rate(h),
                    f"{h.get('wins', '?')}/{h.get('ties', '?')}/{h.get('losses', '?')}",
                    num(h.get("mean_preference")),
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
                    num(s.get("mean_response_tokens"), 1),
                    num(s.get("mean_response_words"), 1),
                    num(s.get("empty_rate")),
                    num(s.get("constraint_pass_rate")),
                    num(s.get("prompt_pass_rate")),
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
    out.extend(f"  {k:<16} {_value(v, 2)}" for k, v in fields)
    for title, mapping in (("inputs", manifest.inputs), ("outputs", manifest.outputs), ("info", manifest.info)):
        out.append(f"  {title}:" + ("" if mapping else " none"))
        width = max((len(k) for k in mapping), default=0)
        out.extend(f"    {k:<{width}}  {_value(v, 4)}" for k, v in mapping.items())
    if stage == "evaluate":
        out.append(render_metrics(read_metrics(store, url, manifest), samples))
    return "\n".join(out)


def render_iteration(store: ArtifactStore, run: str, iteration: int, samples: bool) -> str:
    layout = RunLayout(store, run)
    it = iteration_status(store, run, iteration, store.exists(f"{layout.iteration_url(iteration)}.lock"))
    out = [f"{run}/iter-{iteration:03d}  ({layout.iteration_url(iteration)})"]
    if it.locked:
        out.append(f"  {lock_text(it)}")
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
                _value(manifest.rows),
                _value(manifest.seconds, 1),
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


def _digest_or_none(store: ArtifactStore, stage_url: str) -> str | None:
    try:
        return store.manifest_digest(stage_url)
    except (StoreError, CorruptArtifactError):
        return None


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
        if metrics:
            judges.add(f"{metrics.get('judge', '?')} on {metrics.get('prompts', '?')} prompts")
            base_stats = base_stats or metrics.get("base")
        row = iteration_row(n, metrics, model.info if model else None, {})
        mark = ("*" + (" (stale)" if stale else "")) if best and best["iteration"] == n else ""
        cells = [row[c] for c in COMPARE_COLUMNS]
        rows.append([f"{n:03d}" + (" base" if n == 0 else ""), evaluate if n else "-", *cells, mark])
    if base_stats and rows and rows[0][0].startswith("000"):  # the base's own answers, as every evaluate scored them
        base = answer_cells(base_stats)
        rows[0][4], rows[0][5] = base["constraints met"], base["mean tokens"]
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
