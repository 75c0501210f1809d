"""Per-iteration results of runs, read from committed evaluate and model manifests (collect), and their plot
(the Prefect plot artifact). The reproduction report over seeds is sppo.seed_report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sppo.artifacts import METRICS_FILE, STAGES
from sppo.metrics_table import iteration_row
from sppo.store import ArtifactStore, RunLayout

# Everything below this line in an existing report is kept when the report is written again.
ANALYSIS_MARKER = "<!-- analysis: kept when the report is regenerated -->"


@dataclass(frozen=True)
class IterationResult:
    label: str
    iteration: int
    vs_base: dict
    vs_previous: dict
    policy: dict
    base: dict
    row: dict[str, str]  # sppo.metrics_table's row: what every table of this iteration shows


def collect(store: ArtifactStore, runs: dict[str, str]) -> list[IterationResult]:
    """Every finished iteration of each run (label -> run name), in order, stopping at the first gap."""
    results = []
    for label, run in runs.items():
        layout = RunLayout(store, run)
        iteration = 1
        while store.manifest(layout.stage_url(iteration, "evaluate")) is not None:
            metrics = json.loads(store.read_bytes(f"{layout.stage_url(iteration, 'evaluate')}/{METRICS_FILE}"))
            model = store.manifest(layout.model_url(iteration))
            stages = {s: store.manifest(layout.stage_url(iteration, s)) for s in STAGES}
            seconds = {s: m.seconds if m else None for s, m in stages.items()}
            results.append(
                IterationResult(
                    label=label,
                    iteration=iteration,
                    vs_base=metrics["vs_base"],
                    vs_previous=metrics["vs_reference"],
                    policy=metrics["policy"],
                    base=metrics.get("base", {}),
                    row=iteration_row(iteration, metrics, model.info if model else None, seconds),
                )
            )
            iteration += 1
    return results


def win_rates(ax, xs: list[float], h2hs: list[dict], **style) -> None:
    """Head-to-head win rates with their 95% intervals as error bars."""
    rates = [h["win_rate"] for h in h2hs]
    errors = [[h["win_rate"] - h["ci95_low"] for h in h2hs], [h["ci95_high"] - h["win_rate"] for h in h2hs]]
    ax.errorbar(xs, rates, yerr=errors, capsize=3, **style)


def plot(results: list[IterationResult], path: Path, dpi: int = 100) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    base = results[0].base
    for n, label in enumerate(dict.fromkeys(r.label for r in results)):
        mine = [r for r in results if r.label == label]
        its = [r.iteration + 0.04 * n for r in mine]  # side by side, so the intervals do not overlap
        color = f"C{n}"
        vs_base = [r.vs_base for r in mine]
        vs_prev = [r.vs_previous for r in mine]
        similar = [r.vs_base.get("by_length", {}).get("similar") for r in mine]
        win_rates(axes[0], its, vs_base, marker="o", color=color, label=f"{label} vs base")
        win_rates(axes[0], its, vs_prev, marker="s", color=color, ls=":", alpha=0.6, label=f"{label} vs previous")
        if all(s and s.get("n") for s in similar):  # a bucket without prompts has no rate to draw
            win_rates(axes[1], its, similar, marker="o", color=color, label=label)
        axes[2].plot(
            [0, *its],
            [base.get("constraint_pass_rate", 0), *(r.policy.get("constraint_pass_rate") or 0 for r in mine)],
            marker="o",
            color=color,
            label=label,
        )
        axes[3].plot(
            [0, *its],
            [base.get("mean_response_tokens", 0), *(r.policy["mean_response_tokens"] for r in mine)],
            marker="o",
            color=color,
            label=label,
        )
    titles = (
        "win rate (95% CI)",
        "win rate vs base, similar-length answers",
        "constraints met (iteration 0 = base)",
        "mean response tokens (iteration 0 = base)",
    )
    save_panels(fig, axes, titles, win_rate_panels=2, path=path, dpi=dpi)


def save_panels(fig, axes, titles: Sequence[str], win_rate_panels: int, path: Path, dpi: int) -> None:
    """Title, integer iteration axis and legend on each panel, the 1/2 line on the first `win_rate_panels`
    (win rates), then the PNG."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    for n, (ax, title) in enumerate(zip(axes, titles, strict=True)):
        if n < win_rate_panels:
            ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10 if len(title) < 50 else 9)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
