"""What an iteration's data teach, measured on its own artifacts (`python -m sppo diagnose RUN ITER`):

- among the K samples of each prompt, how often constraint following varies at all (a prompt whose samples
  all meet, or all miss, the same constraints carries no constraint signal);
- for each training pair (best vs worst sample), which of the rule judge's terms separates chosen from
  rejected: the constraints met, degeneracy (loops, copying the prompt, too short or empty), or substance
  (topic words, length fit); and which term decides, i.e. gives the largest weighted share of the score gap.

Plain data, no model: sppo.policy_shift measures how far training moved the policy."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np

from sppo.constraints import check, words
from sppo.judges.rule import (
    CONSTRAINT_WEIGHT,
    COPY_WEIGHT,
    EMPTY_SCORE,
    LENGTH_WEIGHT,
    REPETITION_WEIGHT,
    SHORTNESS_WEIGHT,
    TOPIC_WEIGHT,
    score_parts,
)
from sppo.prompts import PromptRecord

TERMS = ("constraints", "topic", "length", "repetition", "copying", "shortness", "empty")
DEGENERACY = ("repetition", "copying", "shortness", "empty")
SUBSTANCE = ("topic", "length")
SIGNED_WEIGHTS = {
    "constraints": CONSTRAINT_WEIGHT,
    "topic": TOPIC_WEIGHT,
    "length": LENGTH_WEIGHT,
    "repetition": -REPETITION_WEIGHT,
    "copying": -COPY_WEIGHT,
    "shortness": -SHORTNESS_WEIGHT,
}


def weighted_terms(prompt: PromptRecord, response: str) -> dict[str, float]:
    """Each term's weighted contribution to the rule judge's score (they sum to score_response)."""
    if not words(response):
        return dict.fromkeys(TERMS, 0.0) | {"empty": EMPTY_SCORE}
    parts = score_parts(prompt, response)
    return {t: w * getattr(parts, t) for t, w in SIGNED_WEIGHTS.items()} | {"empty": 0.0}


@dataclass
class PairReport:
    pairs: int
    separated_by: dict[str, float]  # share of pairs: constraints differ / only degeneracy / only substance / none
    decided_by: dict[str, float]  # share of pairs whose largest weighted gap in favour of chosen is this term
    chosen_meets_more: float  # among pairs whose constraints differ: chosen meets more of them
    mean_gap: dict[str, float]  # mean weighted gap (chosen - rejected) per term


def pair_report(prompts: dict[str, PromptRecord], pairs: list[dict]) -> PairReport:
    """`pairs`: rows of train.parquet (prompt_id, chosen, rejected)."""
    separated, decided, more, differ = Counter(), Counter(), 0, 0
    gaps = {t: [] for t in TERMS}
    for row in pairs:
        prompt = prompts[row["prompt_id"]]
        chosen, rejected = weighted_terms(prompt, row["chosen"]), weighted_terms(prompt, row["rejected"])
        gap = {t: chosen[t] - rejected[t] for t in TERMS}
        for t in TERMS:
            gaps[t].append(gap[t])
        moved = {t for t in TERMS if abs(gap[t]) > 1e-9}
        if "constraints" in moved:
            separated["constraints differ"] += 1
            differ += 1
            more += gap["constraints"] > 0
        elif moved & set(DEGENERACY):
            separated["only degeneracy"] += 1 if not moved & set(SUBSTANCE) else 0
            separated["degeneracy and substance"] += 1 if moved & set(SUBSTANCE) else 0
        elif moved:
            separated["only substance"] += 1
        else:
            separated["nothing (equal scores)"] += 1
        if moved:
            decided[max(moved, key=lambda t: gap[t])] += 1
    n = max(len(pairs), 1)
    return PairReport(
        pairs=len(pairs),
        separated_by={k: v / n for k, v in separated.most_common()},
        decided_by={k: v / n for k, v in decided.most_common()},
        chosen_meets_more=more / differ if differ else float("nan"),
        mean_gap={t: float(np.mean(v)) if v else 0.0 for t, v in gaps.items()},
    )


@dataclass
class SampleReport:
    prompts: int
    with_constraints: int
    varying: float  # share of prompts with constraints whose K samples differ in constraints met
    all_meet: float  # ... whose samples all meet every constraint
    none_meet_all: float  # ... whose samples all miss at least one constraint, equally
    mean_met: float  # constraints met, mean over every sample


def sample_report(prompts: dict[str, PromptRecord], generations: list[dict]) -> SampleReport:
    """`generations`: rows of generations.parquet (prompt_id, responses)."""
    from sppo.judges.rule import constraints_passed

    varying = all_meet = same_miss = with_constraints = 0
    met = []
    for row in generations:
        prompt = prompts[row["prompt_id"]]
        if not prompt.constraints:
            continue
        with_constraints += 1
        fractions = []
        for response in row["responses"]:
            passed, total = constraints_passed(prompt, response)
            fractions.append(passed / total)
        met += fractions
        if len(set(fractions)) > 1:
            varying += 1
        elif fractions[0] == 1.0:
            all_meet += 1
        else:
            same_miss += 1
    n = max(with_constraints, 1)
    return SampleReport(
        prompts=len(generations),
        with_constraints=with_constraints,
        varying=varying / n,
        all_meet=all_meet / n,
        none_meet_all=same_miss / n,
        mean_met=float(np.mean(met)) if met else float("nan"),
    )


def prompts_of(generations: list[dict]) -> dict[str, PromptRecord]:
    """The prompts (with their constraints) an iteration generated for, from generations.parquet's rows."""
    return {
        row["prompt_id"]: PromptRecord(row["prompt_id"], row["prompt"], tuple(json.loads(row["constraints"] or "[]")))
        for row in generations
    }


@dataclass(frozen=True)
class TypeRow:
    """One constraint type on the held-out prompts: how often pi_t and pi_t+1 meet it, and how many of the
    iteration's training prompts asked for it (0 for a type held out by data.holdout_constraint_types)."""

    type: str
    held_out_prompts: int
    met_before: float
    met_after: float
    trained_prompts: int


def type_report(
    held_out: list[PromptRecord], before: dict[str, str], after: dict[str, str], trained: dict[str, PromptRecord]
) -> list[TypeRow]:
    """Constraints met per type on the held-out prompts that both models answered, most frequent type first.
    A type the policy stopped meeting while training never asked for it is forgetting, not a missing signal."""
    met: dict[str, list[tuple[bool, bool]]] = {}
    for p in held_out:
        if p.id in before and p.id in after:
            for c in p.constraints:
                met.setdefault(c["type"], []).append((check(c, before[p.id]), check(c, after[p.id])))
    asked = Counter(c["type"] for p in trained.values() for c in p.constraints)
    rows = [
        TypeRow(kind, len(m), float(np.mean([b for b, _ in m])), float(np.mean([a for _, a in m])), asked[kind])
        for kind, m in met.items()
    ]
    return sorted(rows, key=lambda r: (-r.held_out_prompts, r.type))
