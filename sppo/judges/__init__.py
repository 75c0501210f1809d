"""Judges: K responses to a prompt in, a K x K preference matrix out (see base.Judge)."""

from __future__ import annotations

from sppo.config import JudgeConfig
from sppo.judges.base import Judge, Judgement, sigmoid_matrix

JUDGE_TYPES = ("rule", "pairrm")


def build_judge(cfg: JudgeConfig) -> Judge:
    # Imported here: PairRM pulls in llm-blender and a DeBERTa only when a recipe asks for it.
    if cfg.type == "rule":
        from sppo.judges.rule import RuleJudge

        return RuleJudge(scale=cfg.rule_scale)
    if cfg.type == "pairrm":
        from sppo.judges.pairrm import PairRMJudge

        return PairRMJudge(cfg.ranker_path, mode=cfg.mode, batch_size=cfg.batch_size)
    raise ValueError(f"unknown judge type {cfg.type!r}; choose one of {JUDGE_TYPES}")


__all__ = ["JUDGE_TYPES", "Judge", "Judgement", "build_judge", "sigmoid_matrix"]
