"""The rule judge prefers replies that follow the instructions and never rewards degenerate ones."""

from __future__ import annotations

import numpy as np
import pytest

from sppo.constraints import describe
from sppo.judges.rule import EMPTY_SCORE, RuleJudge, constraints_passed, score_response
from sppo.prompts import PromptRecord

CONSTRAINTS = (
    {"type": "max_words", "n": 60},
    {"type": "include_keywords", "words": ["tomato"]},
    {"type": "end_with", "phrase": "Is there anything else I can help with?"},
)
TOMATOES = PromptRecord(
    id="p1",
    prompt=" ".join(["Give some practical tips for growing tomatoes on a balcony.", *map(describe, CONSTRAINTS)]),
    constraints=CONSTRAINTS,
)
REASONABLE = (
    "Pick a sunny spot, because a tomato plant needs six to eight hours of light. Use a deep pot with "
    "drainage holes and rich soil, water it every morning, and add a stake so the stems stay upright. "
    "Is there anything else I can help with?"
)
MISSES_ENDING = (
    "Pick a sunny spot, because a tomato plant needs six to eight hours of light. Use a deep pot with "
    "drainage holes and rich soil, water it every morning, and add a stake so the stems stay upright."
)
DEGENERATE = {
    "empty": "   \n ",
    "looping_with_keywords": "Tomato tips for you. " * 12 + "Is there anything else I can help with?",
    "copying_the_prompt": TOMATOES.prompt,
}


def _matrix(replies: list[str], prompt: PromptRecord = TOMATOES) -> np.ndarray:
    (judgement,) = RuleJudge().judge([prompt], [replies])
    assert judgement.scores.dtype == np.float64 and judgement.scores.shape == (len(replies),)
    return judgement.matrix


def test_matrix_is_a_preference_matrix() -> None:
    matrix = _matrix([REASONABLE, MISSES_ENDING, *DEGENERATE.values()])
    assert matrix.shape == (5, 5)
    np.testing.assert_allclose(matrix + matrix.T, 1.0)
    np.testing.assert_allclose(np.diag(matrix), 0.5)


def test_following_constraints_wins() -> None:
    assert constraints_passed(TOMATOES, REASONABLE) == (3, 3)
    assert constraints_passed(TOMATOES, MISSES_ENDING) == (2, 3)
    assert _matrix([REASONABLE, MISSES_ENDING])[0, 1] > 0.5


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_reply_loses(case: str) -> None:
    assert _matrix([REASONABLE, DEGENERATE[case]])[0, 1] > 0.5
    # Even a reply that misses a constraint beats a degenerate one.
    assert score_response(TOMATOES, MISSES_ENDING) > score_response(TOMATOES, DEGENERATE[case])


def test_empty_reply_is_below_every_nonempty_reply() -> None:
    assert score_response(TOMATOES, "") == EMPTY_SCORE
    assert constraints_passed(TOMATOES, "") == (0, 3)
    for reply in ["ok", "tomato " * 50, TOMATOES.prompt * 3, "Is there anything else I can help with?"]:
        assert score_response(TOMATOES, reply) > EMPTY_SCORE


def test_looping_lines_lose_on_a_lowercase_prompt() -> None:
    prompt = PromptRecord("p2", "Describe a quiet morning by a river. Use lowercase only.", ({"type": "lowercase"},))
    reasonable = (
        "the river moves slowly under a thin layer of mist. a heron stands in the shallows, and the only "
        "sound is water brushing against the reeds while the sky turns pale gold."
    )
    looping = "\n".join(["the river is quiet and calm"] * 8)
    assert _matrix([reasonable, looping], prompt)[0, 1] > 0.5


def test_prompt_without_constraints_uses_substance_only() -> None:
    prompt = PromptRecord("p3", "Explain why the sky is blue.")
    on_topic = "Sunlight scatters off air molecules, and blue light scatters the most, so the sky looks blue."
    off_topic = "Bananas are a good source of potassium and taste great in smoothies with some yogurt."
    assert constraints_passed(prompt, on_topic) == (0, 0)
    assert score_response(prompt, on_topic) > score_response(prompt, off_topic)
    assert score_response(prompt, on_topic) > score_response(prompt, "Explain why the sky is blue. " * 3)


def test_judge_is_deterministic_and_checks_lengths() -> None:
    replies = [REASONABLE, *DEGENERATE.values()]
    first = RuleJudge(scale=3.0).judge([TOMATOES], [replies])[0]
    second = RuleJudge(scale=3.0).judge([TOMATOES], [replies])[0]
    np.testing.assert_array_equal(first.matrix, second.matrix)
    with pytest.raises(ValueError, match="prompts"):
        RuleJudge().judge([TOMATOES], [])


def test_weighted_terms_sum_to_the_judges_score_and_pairs_are_split_by_what_separates_them():
    from sppo.diagnostics import pair_report, weighted_terms
    from sppo.judges.rule import score_response

    prompt = PromptRecord("p", "Describe rain. Answer in lowercase letters only.", ({"type": "lowercase"},))
    replies = ["rain falls softly on the roofs of the town", "Rain Falls Softly On The Roofs", "", "rain " * 18]
    for reply in replies:
        assert sum(weighted_terms(prompt, reply).values()) == pytest.approx(score_response(prompt, reply))
    report = pair_report(
        {"p": prompt},
        [
            {"prompt_id": "p", "chosen": replies[0], "rejected": replies[1]},  # lowercase, and length
            {"prompt_id": "p", "chosen": replies[0], "rejected": replies[2]},  # empty: constraints differ too
        ],
    )
    assert report.pairs == 2 and report.separated_by == {"constraints differ": 1.0}
    assert report.chosen_meets_more == 1.0
    assert set(report.decided_by) <= {"constraints", "empty", "length", "shortness"}
