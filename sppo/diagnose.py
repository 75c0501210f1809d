"""`python -m sppo diagnose RUN ITER`: what iteration ITER's data taught and how far it moved the policy
(sppo.diagnostics, sppo.policy_shift), printed as text and returned as a dict (--json writes it)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from sppo.answer_cache import cached_answers
from sppo.artifacts import GENERATIONS, GENERATIONS_FILE, PAIRS, TRAIN_FILE, read_rows
from sppo.config import RecipeConfig
from sppo.diagnostics import pair_report, prompts_of, sample_report, type_report
from sppo.prompts import load_splits
from sppo.store import RunLayout


def diagnose(recipe: RecipeConfig, layout: RunLayout, iteration: int, models: bool = True) -> dict:
    store = layout.store
    local = lambda stage: store.local_copy(layout.stage_url(iteration, stage))  # noqa: E731
    generations = read_rows(local("generate") / GENERATIONS_FILE, GENERATIONS)
    pairs = read_rows(local("dataset") / TRAIN_FILE, PAIRS)
    prompts = prompts_of(generations)
    out = {
        "samples": dataclasses.asdict(sample_report(prompts, generations)),
        "pairs": dataclasses.asdict(pair_report(prompts, pairs)),
    }
    before, after = layout.model_url(iteration - 1), layout.model_url(iteration)
    theirs, ours = cached_answers(store, layout, before), cached_answers(store, layout, after)
    evaluation = load_splits(recipe.data).evaluation
    out["types"] = [dataclasses.asdict(row) for row in type_report(evaluation, theirs, ours, prompts)]
    if models:
        from sppo.policy_shift import policy_shift  # torch: only when asked

        held_out = [
            {"prompt_id": p.id, "prompt": p.prompt, "chosen": ours[p.id], "rejected": theirs[p.id]}
            for p in evaluation
            if p.id in ours and p.id in theirs
        ]
        t = recipe.train
        shift = policy_shift(
            store.local_copy(before),
            store.local_copy(after),
            pairs,
            1.0 / t.loss.beta,
            t.max_length,
            t.max_prompt_length,
            held_out or None,
        )
        out["shift"] = dataclasses.asdict(shift)
    return out


def render(report: dict) -> str:
    s, p = report["samples"], report["pairs"]
    lines = [
        f"samples: {s['prompts']} prompts, {s['with_constraints']} with constraints; mean constraints met "
        f"{s['mean_met']:.3f}",
        f"  constraints met varies among a prompt's samples: {s['varying']:.3f}; all samples meet all: "
        f"{s['all_meet']:.3f}; all miss equally: {s['none_meet_all']:.3f}",
        f"pairs: {p['pairs']}; what separates chosen from rejected:",
        *(f"  {k:<28} {v:.3f}" for k, v in p["separated_by"].items()),
        f"  chosen meets more constraints, where they differ: {p['chosen_meets_more']:.3f}",
        "the term with the largest weighted gap in favour of chosen (the one that decides):",
        *(f"  {k:<28} {v:.3f}" for k, v in p["decided_by"].items()),
        "mean weighted gap, chosen - rejected: " + ", ".join(f"{k} {v:+.3f}" for k, v in p["mean_gap"].items()),
    ]
    if report.get("types"):
        lines.append("constraints met on the held-out prompts, by type (trained: training prompts asking for it):")
        lines.append(f"  {'type':<18} {'prompts':>7} {'pi_t':>6} {'pi_t+1':>7} {'trained':>7}")
        lines += [
            f"  {r['type']:<18} {r['held_out_prompts']:>7} {r['met_before']:>6.2f} {r['met_after']:>7.2f} "
            f"{r['trained_prompts']:>7}"
            for r in report["types"]
        ]
    if "shift" in report:
        h = report["shift"]
        lines += [
            f"policy shift on the {h['pairs']} training pairs (log pi_t+1/pi_t, nats):",
            f"  chosen {h['logr_chosen']:+.2f} (target {h['target_chosen']:+.2f}); rejected "
            f"{h['logr_rejected']:+.2f} (target {h['target_rejected']:+.2f})",
            f"  reached {h['reached']:.3f} of the targets' size; correlation with the target {h['corr']:.3f}",
        ]
        if h["kl_own"] is not None:
            lines.append(
                f"  held-out: mean log-ratio of pi_t+1's answers {h['kl_own']:.2f} (~KL(pi_t+1||pi_t)), "
                f"of pi_t's answers {-h['kl_reference']:.2f} (~-KL(pi_t||pi_t+1))"
            )
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2))
