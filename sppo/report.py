"""The reproduction report: per-iteration metrics of several runs (one per loss) side by side, as a
markdown table and a PNG plot. Reads only committed evaluate and model manifests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sppo.store import ArtifactStore, RunLayout


@dataclass(frozen=True)
class IterationResult:
    label: str
    iteration: int
    vs_base: dict
    vs_previous: dict
    policy: dict
    train_loss: float | None


def collect(store: ArtifactStore, runs: dict[str, str]) -> list[IterationResult]:
    """Every finished iteration of each run (label -> run name), in order, stopping at the first gap."""
    results = []
    for label, run in runs.items():
        layout = RunLayout(store, run)
        iteration = 1
        while store.manifest(layout.stage_url(iteration, "evaluate")) is not None:
            metrics = json.loads(store.read_bytes(f"{layout.stage_url(iteration, 'evaluate')}/metrics.json"))
            model = store.manifest(layout.model_url(iteration))
            results.append(
                IterationResult(
                    label=label,
                    iteration=iteration,
                    vs_base=metrics["vs_base"],
                    vs_previous=metrics["vs_reference"],
                    policy=metrics["policy"],
                    train_loss=model.info.get("mean_loss") if model else None,
                )
            )
            iteration += 1
    return results


def _rate(h2h: dict | None) -> str:
    if not h2h or not h2h.get("n"):
        return "-"
    return f"{h2h['win_rate']:.3f} [{h2h['ci95_low']:.3f}, {h2h['ci95_high']:.3f}]"


def _num(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(results: list[IterationResult]) -> str:
    head = (
        "| run | iter | win vs base [95%] | win vs previous [95%] | vs base, similar length | "
        "constraints met | mean tokens | loops | empty | train loss |"
    )
    rows = [head, "|" + "---|" * 10]
    for r in results:
        rows.append(
            f"| {r.label} | {r.iteration} | {_rate(r.vs_base)} | {_rate(r.vs_previous)} | "
            f"{_rate(r.vs_base.get('by_length', {}).get('similar'))} | {_num(r.policy.get('constraint_pass_rate'))} | "
            f"{_num(r.policy.get('mean_response_tokens'), 1)} | {_num(r.policy.get('loop_rate'))} | "
            f"{_num(r.policy.get('empty_rate'))} | {_num(r.train_loss, 4)} |"
        )
    return "\n".join(rows)


def plot(results: list[IterationResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for label in dict.fromkeys(r.label for r in results):
        mine = [r for r in results if r.label == label]
        its = [r.iteration for r in mine]
        win = [r.vs_base["win_rate"] for r in mine]
        err = [
            [w - r.vs_base["ci95_low"] for w, r in zip(win, mine, strict=True)],
            [r.vs_base["ci95_high"] - w for w, r in zip(win, mine, strict=True)],
        ]
        axes[0].errorbar(its, win, yerr=err, marker="o", capsize=3, label=label)
        axes[1].plot(its, [r.policy.get("constraint_pass_rate") or 0 for r in mine], marker="o", label=label)
        axes[2].plot(its, [r.policy["mean_response_tokens"] for r in mine], marker="o", label=label)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    for ax, title in zip(axes, ("win rate vs base (95% CI)", "constraints met", "mean response tokens"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(store: ArtifactStore, runs: dict[str, str], out: Path, title: str, notes: str = "") -> Path:
    """Write <out>.md and <out>.png; returns the markdown path."""
    results = collect(store, runs)
    if not results:
        raise ValueError(f"no finished iteration in runs {sorted(runs.values())} of store {store.root}")
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(results, png)
    text = f"# {title}\n\n{notes}\n\n{markdown_table(results)}\n\n![metrics across iterations]({png.name})\n"
    out.with_suffix(".md").write_text(text)
    return out.with_suffix(".md")
