"""What a person reads about a run in the Prefect UI: artifacts keyed per run, published once by each flow
run of an iteration that did work (a re-run that reused every stage publishes nothing, unless the last
publish of these results failed), so each key's history is the run's iterations in order.

    <key>-metrics   table, one row per finished iteration: win rates with 95% intervals, constraints met,
                    length, loops, empty replies, train loss, minutes per stage
    <key>-plot      image: the metrics across iterations (sppo.report's plot)
    <key>-samples   markdown: held-out answers of the new policy beside the reference's with the judge's
                    verdict, and a few training pairs with their win rates
    links           (on the flow run) each stage folder of the iteration, and the run's BEST.json

<key> is the run name as an artifact key (lowercase letters, digits and dashes). Missing values read "-"."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from sppo.artifacts import BEST_FILE, MANIFEST, METRICS_FILE, PAIRS, STAGE_NAMES, STAGES, TRAIN_FILE, read_rows
from sppo.config import PRESIGN_SECONDS
from sppo.metrics_table import num
from sppo.report import IterationResult, collect, plot
from sppo.store import ArtifactStore, RunLayout

# The artifact shows each stage's minutes and the mean loss; `sppo runs compare` shows the other two.
ARTIFACT_OMITS = ("loss first/final/mean", "minutes")
SAMPLES_SHOWN = 3
PAIRS_SHOWN = 3


def artifact_key(run: str) -> str:
    """The run name as a Prefect artifact key. A name that had to change gets a short hash of the
    original, so two runs never share a key (`My_Run` and `my-run`)."""
    key = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", run.lower())).strip("-")
    if key != run:
        key = f"{key or 'run'}-{hashlib.sha256(run.encode()).hexdigest()[:6]}"
    return key


def metrics_rows(results: list[IterationResult]) -> list[dict[str, str]]:
    """One row per finished iteration, every cell a string (sppo.metrics_table), in the artifact's columns."""
    return [{c: r.row[c] for c in r.row if c not in ARTIFACT_OMITS} for r in results]


def browser_url(store: ArtifactStore, url: str, presign_seconds: int = PRESIGN_SECONDS) -> str:
    """A URL a browser can open for an object in the store: presigned for S3 (a read link to that object for
    `presign_seconds`, the recipe's publish.presign_seconds; STS credentials end it with their session),
    file:// for a local folder (a browser will not follow a file:// link from a web page, but the link text
    can be copied)."""
    if store.is_local:
        return Path(store.path_of(url)).resolve().as_uri()
    return store.fs.url(store.path_of(url), expires=presign_seconds)


def plot_url(
    store: ArtifactStore,
    layout: RunLayout,
    results: list[IterationResult],
    iteration: int,
    presign_seconds: int = PRESIGN_SECONDS,
) -> str:
    """The plot as an image URL the UI's browser can load: for a local store a data: URL (a web page may not
    load file://), for S3 a presigned URL of the PNG written under <run>/ui/."""
    with tempfile.TemporaryDirectory(prefix="sppo-plot-") as tmp:
        path = Path(tmp) / "metrics.png"
        plot(results, path, dpi=70)
        png = path.read_bytes()
    if store.is_local:
        return "data:image/png;base64," + base64.b64encode(png).decode()
    url = store.join(layout.run, "ui", f"metrics-iter-{iteration:03d}.png")
    store.put_bytes(url, png)
    return browser_url(store, url, presign_seconds)


def _quote(text: str, limit: int = 1500) -> str:
    """Model text as a markdown block quote: escaped so it shows as written, wrapped by the page (the UI's
    tables do not wrap), cut when long."""
    text = text.strip()
    if not text:
        return "> *(empty reply)*"
    if len(text) > limit:
        text = text[:limit] + " [...]"
    text = re.sub(r"([\\`*_{}\[\]<>|#+!~-])", r"\\\1", text)
    return "\n".join(f"> {line}" for line in text.replace("\r", "").split("\n"))


def samples_markdown(store: ArtifactStore, layout: RunLayout, iteration: int) -> str:
    evaluate = layout.stage_url(iteration, "evaluate")
    metrics = json.loads(store.read_bytes(f"{evaluate}/{METRICS_FILE}"))
    new, old = f"pi_{iteration}", f"pi_{iteration - 1}"
    blocks = [
        f"## {layout.run}, iteration {iteration}: held-out answers",
        f"The new policy ({new}) and the reference ({old}) answer the same held-out prompt; the verdict is the "
        f"{metrics.get('judge', '?')} judge's, for the new policy.",
    ]
    for n, sample in enumerate((metrics.get("samples") or [])[:SAMPLES_SHOWN], 1):
        verdict = sample.get("verdict") or {}
        blocks += [
            f"### Prompt {n}",
            _quote(sample.get("prompt", "")),
            f"**Verdict: {verdict.get('vs_reference', '-')}** against the reference "
            f"({verdict.get('vs_base', '-')} against the base)",
            f"**New policy ({new})**",
            _quote(sample.get("policy", "")),
            f"**Reference ({old})**",
            _quote(sample.get("reference", "")),
        ]
    pairs = read_rows(store.local_copy(layout.stage_url(iteration, "dataset")) / TRAIN_FILE, PAIRS)
    shown = pairs[:PAIRS_SHOWN]
    blocks += [
        f"## Training pairs of iteration {iteration} ({len(shown)} of {len(pairs)})",
        f"Win rate: the judge's probability that the response beats {old}'s samples for its prompt; "
        "P: P(chosen > rejected).",
    ]
    for n, pair in enumerate(shown, 1):
        blocks += [
            f"### Pair {n} (P = {num(pair['chosen_probs'])})",
            _quote(pair["prompt"]),
            f"**Chosen**, win rate {num(pair['chosen_probs_win'])}",
            _quote(pair["chosen"]),
            f"**Rejected**, win rate {num(pair['chosen_probs_lose'])}",
            _quote(pair["rejected"]),
        ]
    return "\n\n".join(blocks) + "\n"


def publish_links(
    store: ArtifactStore, layout: RunLayout, iteration: int, presign_seconds: int = PRESIGN_SECONDS
) -> None:
    for stage in STAGES:
        folder = layout.stage_url(iteration, stage)
        if store.manifest(folder) is not None:
            create_link_artifact(
                link=browser_url(store, f"{folder}/{MANIFEST}", presign_seconds),
                link_text=folder,
                description=f"iteration {iteration}, {STAGE_NAMES[stage]}: the stage folder (link: its manifest)",
            )
    best = store.join(layout.run, BEST_FILE)
    if store.exists(best):
        create_link_artifact(
            link=browser_url(store, best, presign_seconds), link_text=best, description="the run's best model"
        )


def published_url(layout: RunLayout, iteration: int) -> str:
    """Written after an iteration's last artifact was published: which evaluate stage they showed."""
    return layout.store.join(layout.run, "ui", f"published-iter-{iteration:03d}.json")


def publish_unless_published(
    store_root: str, run: str, iteration: int, did_work: bool, presign_seconds: int = PRESIGN_SECONDS
) -> None:
    """Publish the run's artifacts after `iteration` finished, if this flow run did work or if the results it
    reused were never published (the run that made them failed while publishing: the API was down)."""
    layout = RunLayout(ArtifactStore(store_root), run)
    if not did_work:
        try:
            marker = json.loads(layout.store.read_bytes(published_url(layout, iteration)))
        except (FileNotFoundError, ValueError):
            marker = {}
        if marker.get("evaluate") == layout.store.manifest_digest(layout.stage_url(iteration, "evaluate")):
            get_run_logger().info("iteration %d: every stage reused; its artifacts were published when made", iteration)
            return
    publish_iteration(store_root, run, iteration, presign_seconds)


def publish_iteration(store_root: str, run: str, iteration: int, presign_seconds: int = PRESIGN_SECONDS) -> None:
    """Publish the run's artifacts after `iteration` finished, then mark them published."""
    store = ArtifactStore(store_root)
    layout = RunLayout(store, run)
    key = artifact_key(run)
    results = collect(store, {run: run})
    span = f"iteration {iteration}" if iteration == 1 else f"iterations 1-{iteration}"
    best = "" if store.exists(store.join(run, BEST_FILE)) else f" No best model marked: `python -m sppo best {run} N`."
    create_table_artifact(
        key=f"{key}-metrics",
        table=metrics_rows(results),
        description=f"Run {run}, {span}: win rates of pi_t against pi_(t-1) and the base on "
        "held-out prompts (ties count 1/2), the same on prompts where both answers have similar length, "
        f"pi_t's answers, and each stage's minutes.{best}",
    )
    create_image_artifact(
        key=f"{key}-plot",
        image_url=plot_url(store, layout, results, iteration, presign_seconds),
        description=f"Run {run}: metrics across {span} (iteration 0 = the base model)",
    )
    create_markdown_artifact(
        key=f"{key}-samples",
        markdown=samples_markdown(store, layout, iteration),
        description=f"Run {run}, iteration {iteration}: sample answers and training pairs",
    )
    publish_links(store, layout, iteration, presign_seconds)
    digest = store.manifest_digest(layout.stage_url(iteration, "evaluate"))  # which results, all stages before it
    store.put_bytes(published_url(layout, iteration), json.dumps({"evaluate": digest}).encode())
    get_run_logger().info("iteration %d: published artifacts %s-metrics, %s-plot, %s-samples", iteration, key, key, key)
