"""An iteration's metrics as one row of strings: what the reproduction report (sppo.report), the Prefect
metrics artifact (tasks/artifacts.py) and `python -m sppo runs compare` show, each picking its columns.

One rule for a missing value: "-" for None, anything not a number, or a number that is not finite."""

from __future__ import annotations

import math
from typing import Any

from sppo.artifacts import STAGE_NAMES


def num(value: Any, digits: int = 3) -> str:
    """A number as a person reads it."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def rate(h2h: dict | None) -> str:
    """ "0.625 [0.412, 0.838]": a win rate with its 95% interval, "-" without prompts."""
    if not h2h or not h2h.get("n") or h2h.get("win_rate") is None:
        return "-"
    return f"{num(h2h['win_rate'])} [{num(h2h.get('ci95_low'))}, {num(h2h.get('ci95_high'))}]"


def answer_cells(stats: dict | None) -> dict[str, str]:
    """What a set of answers (pi_t's, or the base's) looks like."""
    stats = stats or {}
    return {
        "constraints met": num(stats.get("constraint_pass_rate")),
        "mean tokens": num(stats.get("mean_response_tokens"), 1),
        "loops": num(stats.get("loop_rate")),
        "empty": num(stats.get("empty_rate")),
    }


def iteration_row(
    iteration: int, metrics: dict | None, train_info: dict | None, stage_seconds: dict[str, float | None]
) -> dict[str, str]:
    """evaluate's metrics.json, the train stage's manifest info, and each stage's seconds (by folder name)."""
    metrics, train_info = metrics or {}, train_info or {}
    vs_base = metrics.get("vs_base") or {}
    losses = [num(train_info.get(k)) for k in ("first_loss", "final_loss", "mean_loss")]
    seconds = [s for s in stage_seconds.values() if s is not None]
    return {
        "iteration": str(iteration),
        "win vs previous [95%]": rate(metrics.get("vs_reference")),
        "win vs base [95%]": rate(vs_base),
        "vs base, similar length [95%]": rate((vs_base.get("by_length") or {}).get("similar")),
        **answer_cells(metrics.get("policy")),
        **unseen_type_cells(metrics.get("unseen_types")),
        "train loss": num(train_info.get("mean_loss"), 4),
        "loss first/final/mean": "-" if losses == ["-"] * 3 else "/".join(losses),
        **{f"{STAGE_NAMES[stage]} min": num(None if s is None else s / 60, 2) for stage, s in stage_seconds.items()},
        "minutes": num(sum(seconds) / 60, 1) if seconds else "-",
    }


def unseen_type_cells(unseen: dict | None) -> dict[str, str]:
    """With data.holdout_constraint_types: the held-out prompts carrying a type never trained on (transfer,
    not a fit to the training prompts' checker). No columns for a run without it, so its table is unchanged."""
    if not unseen:
        return {}
    policy, base = unseen.get("policy") or {}, unseen.get("base") or {}
    return {
        "unseen types: prompts": str(unseen.get("prompts", "-")),
        "unseen types: win vs base [95%]": rate(unseen.get("vs_base")),
        "unseen types: constraints met (base)": (
            f"{num(policy.get('constraint_pass_rate'))} ({num(base.get('constraint_pass_rate'))})"
        ),
    }
