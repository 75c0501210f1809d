"""The reproduction report over seeds (`make reproduce-cpu SEEDS=3`): per loss and iteration, each figure as
the mean over seeds, each seed's value, and a 95% interval pooled over every seed's held-out prompts.

Figures: win rate against the base and against the previous iteration; constraints met and prompts fully
passed, on all held-out prompts and on the prompts where neither the policy's nor the base's answer
degenerates (empty or looping), with the difference to the base there; loop rate and mean length; and, at
the last iteration, each loss's model head to head against the first loss's (SPPO against DPO).
Reads committed metrics.json files and the runs' held-out answer caches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sppo.answer_cache import cached_answers
from sppo.constraints import check, words
from sppo.evaluation import head_to_head
from sppo.fluency import repetition
from sppo.judges.base import Judge
from sppo.metrics_table import num
from sppo.prompts import PromptRecord, carries_type
from sppo.report import ANALYSIS_MARKER, IterationResult, collect, save_panels
from sppo.store import ArtifactStore, RunLayout

OUTCOME = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass
class Figure:
    """One figure over seeds: each seed's value, and the per-prompt values pooled over seeds."""

    per_seed: list[float | None]
    pooled: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        values = [v for v in self.per_seed if v is not None]
        return float(np.mean(values)) if values else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """Normal approximation over the pooled per-prompt values (hundreds of them)."""
        n = len(self.pooled)
        if n < 2:
            return None
        mean, half = float(np.mean(self.pooled)), 1.96 * float(np.std(self.pooled, ddof=1)) / math.sqrt(n)
        return mean - half, mean + half

    def text(self, digits: int = 3) -> str:
        seeds = ", ".join(num(v, digits) for v in self.per_seed)
        interval = self.interval
        pooled = f" [{num(interval[0], digits)}, {num(interval[1], digits)}]" if interval else ""
        return f"{num(self.mean, digits)}{pooled} ({seeds})"


def degenerate(answer: str) -> bool:
    return not words(answer) or repetition(answer) > 0


def constraints_met(prompt: PromptRecord, answer: str) -> float | None:
    if not prompt.constraints:
        return None
    return float(np.mean([check(c, answer) for c in prompt.constraints])) if words(answer) else 0.0


@dataclass
class Row:
    label: str
    iteration: int
    figures: dict[str, Figure]


def _win_rate(results: Sequence[IterationResult | None], key: str) -> Figure:
    h2hs = [getattr(r, key) if r else None for r in results]
    return Figure(
        [h.get("win_rate") if h else None for h in h2hs],
        # metrics.json keeps the counts (its per-prompt verdicts go with the samples only)
        [v for h in h2hs if h for v in [1.0] * h["wins"] + [0.5] * h["ties"] + [0.0] * h["losses"]],
    )


def _answer_figures(
    store: ArtifactStore, runs: Sequence[str], iteration: int, prompts: Sequence[PromptRecord]
) -> dict[str, Figure]:
    met, passed, clean_met, clean_base, gain = (Figure([]) for _ in range(5))
    for run in runs:
        layout = RunLayout(store, run)
        ours = cached_answers(store, layout, layout.model_url(iteration))
        base = cached_answers(store, layout, layout.model_url(0))
        rows = [(p, ours[p.id], base[p.id]) for p in prompts if p.constraints and p.id in ours and p.id in base]
        mine = [constraints_met(p, a) for p, a, _ in rows]
        clean = [
            (constraints_met(p, a), constraints_met(p, b))
            for p, a, b in rows
            if not degenerate(a) and not degenerate(b)
        ]
        for figure, values in (
            (met, mine),
            (passed, [float(m == 1.0) for m in mine]),
            (clean_met, [a for a, _ in clean]),
            (clean_base, [b for _, b in clean]),
            (gain, [a - b for a, b in clean]),
        ):
            figure.per_seed.append(float(np.mean(values)) if values else None)
            figure.pooled += values
    return {
        "constraints met": met,
        "prompts fully passed": passed,
        "constraints met, neither degenerate": clean_met,
        "base there": clean_base,
        "gain over base there": gain,
    }


def seed_rows(
    store: ArtifactStore, runs: dict[str, list[str]], prompts: Sequence[PromptRecord], holdout_types: Sequence[str] = ()
) -> list[Row]:
    """`runs`: label (loss) -> its run per seed, in seed order. With `holdout_types` (the recipe's
    data.holdout_constraint_types) each row also gives the held-out prompts carrying one of them apart."""
    unseen = [p for p in prompts if carries_type(p, holdout_types)]
    rows = []
    for label, seeds in runs.items():
        per_seed = [{r.iteration: r for r in collect(store, {label: run})} for run in seeds]
        for iteration in sorted(set().union(*per_seed)):
            results = [by_iteration.get(iteration) for by_iteration in per_seed]
            policies = [r.policy if r else {} for r in results]
            figures = {
                "win vs base": _win_rate(results, "vs_base"),
                "win vs previous": _win_rate(results, "vs_previous"),
                **_answer_figures(store, seeds, iteration, prompts),
                **(
                    {
                        f"{UNSEEN} {name}": figure
                        for name, figure in _answer_figures(store, seeds, iteration, unseen).items()
                        if f"{UNSEEN} {name}" in UNSEEN_COLUMNS
                    }
                    if unseen
                    else {}
                ),
                "loop rate": Figure([p.get("loop_rate") for p in policies]),
                "mean tokens": Figure([p.get("mean_response_tokens") for p in policies]),
            }
            rows.append(Row(label, iteration, figures))
    return rows


def head_to_heads(
    store: ArtifactStore, runs: dict[str, list[str]], iteration: int, prompts: Sequence[PromptRecord], judge: Judge
) -> dict[str, Figure]:
    """Each later loss's iteration-`iteration` model against the first loss's, seed by seed, on the held-out
    prompts both answered: the first loss's win rate."""
    (first, first_runs), *others = runs.items()
    out = {}
    for label, seeds in others:
        figure = Figure([])
        for ours_run, theirs_run in zip(first_runs, seeds, strict=True):
            ours_layout, theirs_layout = RunLayout(store, ours_run), RunLayout(store, theirs_run)
            ours = cached_answers(store, ours_layout, ours_layout.model_url(iteration))
            theirs = cached_answers(store, theirs_layout, theirs_layout.model_url(iteration))
            shared = [p for p in prompts if p.id in ours and p.id in theirs]
            if not shared:
                figure.per_seed.append(None)
                continue
            h2h = head_to_head(judge, shared, [ours[p.id] for p in shared], [theirs[p.id] for p in shared])
            figure.per_seed.append(h2h["win_rate"])
            figure.pooled += [OUTCOME[v] for v in h2h["verdicts"]]
        out[f"{first} vs {label}"] = figure
    return out


COLUMNS = (
    "win vs base",
    "win vs previous",
    "constraints met",
    "prompts fully passed",
    "constraints met, neither degenerate",
    "gain over base there",
    "loop rate",
    "mean tokens",
)


UNSEEN = "unseen types:"
# Transfer: constraints met on the held-out prompts whose constraint types were never trained on.
UNSEEN_COLUMNS = (f"{UNSEEN} constraints met, neither degenerate", f"{UNSEEN} gain over base there")


def markdown(rows: list[Row], h2h: dict[str, Figure], last: int) -> str:
    columns = COLUMNS + tuple(c for c in UNSEEN_COLUMNS if all(c in row.figures for row in rows))
    head = "| loss | iter | " + " | ".join(columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for row in rows:
        cells = [row.figures[c].text(1 if c == "mean tokens" else 3) for c in columns]
        lines.append(f"| {row.label} | {row.iteration} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"Iteration {last}, head to head: {name}: win rate {fig.text()}" for name, fig in h2h.items()]
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, dpi: int = 100) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = ("win vs base", "constraints met, neither degenerate", "loop rate", "mean tokens")
    fig, axes = plt.subplots(1, len(panels), figsize=(18, 4))
    for n, label in enumerate(dict.fromkeys(r.label for r in rows)):
        mine = [r for r in rows if r.label == label]
        xs = [r.iteration + 0.05 * n for r in mine]
        for ax, name in zip(axes, panels, strict=True):
            figures = [r.figures[name] for r in mine]
            means = [f.mean if f.mean is not None else math.nan for f in figures]
            errors = [
                [m - f.interval[0] if f.interval else 0 for m, f in zip(means, figures, strict=True)],
                [f.interval[1] - m if f.interval else 0 for m, f in zip(means, figures, strict=True)],
            ]
            ax.errorbar(xs, means, yerr=errors, capsize=3, marker="o", color=f"C{n}", label=label)
            for seed in range(len(figures[0].per_seed)):
                ys = [f.per_seed[seed] if f.per_seed[seed] is not None else math.nan for f in figures]
                ax.plot(xs, ys, ".", color=f"C{n}", alpha=0.35)
    titles = [f"{name}\n(mean over seeds, pooled 95% CI; dots: seeds)" for name in panels]  # two lines: no overlap
    save_panels(fig, axes, titles, win_rate_panels=1, path=path, dpi=dpi)


def write_seed_report(
    store: ArtifactStore,
    runs: dict[str, list[str]],
    prompts: Sequence[PromptRecord],
    judge: Judge,
    out: Path,
    title: str,
    notes: str = "",
    holdout_types: Sequence[str] = (),
) -> Path:
    """Write <out>.md and <out>.png; a hand-written analysis below ANALYSIS_MARKER in <out>.md is kept."""
    rows = seed_rows(store, runs, prompts, holdout_types)
    if not rows:
        raise ValueError(f"no finished iteration in runs {sorted(r for rs in runs.values() for r in rs)}")
    last = min(max(r.iteration for r in rows if r.label == label) for label in runs)
    h2h = head_to_heads(store, runs, last, prompts, judge) if len(runs) > 1 else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(rows, png)
    md = out.with_suffix(".md")
    seeds = len(next(iter(runs.values())))
    legend = (
        f"Each cell: mean over {seeds} seed(s) [95% interval pooled over every seed's held-out prompts] "
        "(each seed's value). Win rates count ties as 1/2. 'Neither degenerate': prompts where neither the "
        "policy's nor the base's answer is empty or loops; 'gain over base there': constraints met minus the "
        "base's on those prompts."
        + (
            f" 'Unseen types': the held-out prompts carrying a constraint type never trained on "
            f"({', '.join(holdout_types)}; data.holdout_constraint_types)."
            if holdout_types
            else ""
        )
    )
    text = f"# {title}\n\n{notes}\n\n{legend}\n\n{markdown(rows, h2h, last)}\n\n![metrics over seeds]({png.name})\n"
    old = md.read_text() if md.is_file() else ""
    analysis = old[old.index(ANALYSIS_MARKER) :] if ANALYSIS_MARKER in old else f"{ANALYSIS_MARKER}\n"
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text(f"{text}\n{analysis}")
    tmp.replace(md)
    return md


def held_out_prompts(recipe, store: ArtifactStore, run: str) -> list[PromptRecord]:
    """The recipe's held-out prompts, in the base model's chat template (what a PairRM judge reads)."""
    from dataclasses import replace

    from sppo.generation import chat_prompt_text
    from sppo.models import load_policy_tokenizer
    from sppo.prompts import load_splits

    tokenizer = load_policy_tokenizer(store.local_copy(RunLayout(store, run).model_url(0)))
    return [replace(p, chat_prompt=chat_prompt_text(tokenizer, p.prompt)) for p in load_splits(recipe.data).evaluation]
