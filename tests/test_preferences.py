"""Preference math against a hand-computed example of the reference definition (design.md)."""

import numpy as np
import pytest

from sppo.judges.base import sigmoid_matrix
from sppo.preferences import check_preference_matrix, select_pair, win_rates

# Judge scores s = (2, 0, 1) for K = 3 responses. sigmoid(1) = 0.7310585786, sigmoid(2) = 0.8807970780.
S1, S2 = 0.7310585786300049, 0.8807970779778823
EXPECTED_P = np.array(
    [
        [0.5, S2, S1],
        [1 - S2, 0.5, 1 - S1],
        [1 - S1, S1, 0.5],
    ]
)
# Row means, diagonal included: (0.5 + S2 + S1) / 3, (0.5 + (1 - S2) + (1 - S1)) / 3, 1.5 / 3.
EXPECTED_W = np.array([0.7039518855359624, 0.2960481144640376, 0.5])


def test_matrix_from_scores_matches_hand_computation():
    matrix = sigmoid_matrix(np.array([2.0, 0.0, 1.0]))
    np.testing.assert_allclose(matrix, EXPECTED_P, atol=1e-12)
    check_preference_matrix(matrix)


def test_win_rates_are_row_means_with_the_diagonal():
    np.testing.assert_allclose(win_rates(EXPECTED_P), EXPECTED_W, atol=1e-12)


def test_pair_is_best_against_worst_with_its_probabilities():
    pair = select_pair(np.array([2.0, 0.0, 1.0]), EXPECTED_P)
    assert (pair.winner, pair.loser) == (0, 1)
    assert pair.chosen_probs == pytest.approx(S2)
    assert pair.chosen_probs_win == pytest.approx(EXPECTED_W[0])
    assert pair.chosen_probs_lose == pytest.approx(EXPECTED_W[1])


def test_ties_pick_two_different_responses_deterministically():
    scores = np.zeros(5)
    pair = select_pair(scores, sigmoid_matrix(scores))
    assert (pair.winner, pair.loser) == (0, 4)
    assert pair.chosen_probs == pair.chosen_probs_win == pair.chosen_probs_lose == 0.5
    # Partial ties: the first of the best, the last of the worst.
    pair = select_pair(np.array([1.0, 3.0, 0.0, 3.0, 0.0]), sigmoid_matrix(np.array([1.0, 3.0, 0.0, 3.0, 0.0])))
    assert (pair.winner, pair.loser) == (1, 4)


def test_inconsistent_matrix_is_rejected():
    bad = EXPECTED_P.copy()
    bad[0, 1] = 0.9
    with pytest.raises(ValueError, match="P \\+ P\\^T = 1"):
        check_preference_matrix(bad, where="test judge")


def test_non_finite_judgements_name_the_prompt_and_the_value():
    import numpy as np
    import pytest

    from sppo.preferences import check_preference_matrix, check_scores

    with pytest.raises(ValueError, match=r"rule judge, prompt p7: response 1 got the score inf"):
        check_scores(np.array([0.5, np.inf]), "rule judge, prompt p7")
    matrix = np.array([[0.5, np.nan], [np.nan, 0.5]])
    with pytest.raises(ValueError, match=r"prompt p7: preference matrix holds nan at \[0\]\[1\]"):
        check_preference_matrix(matrix, "rule judge, prompt p7")
    with pytest.raises(ValueError, match=r"holds 1.5 at \[0\]\[1\], outside \[0, 1\]"):
        check_preference_matrix(np.array([[0.5, 1.5], [-0.5, 0.5]]), "j")
