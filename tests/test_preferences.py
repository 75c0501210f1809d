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


def test_ties_as_the_reference_pairs_them():
    # numpy's argmax / argmin, as uclaml/SPPO's compute_prob.py: an all-tied prompt pairs a response with itself.
    scores = np.zeros(5)
    pair = select_pair(scores, sigmoid_matrix(scores))
    assert (pair.winner, pair.loser) == (0, 0)
    assert pair.chosen_probs == pair.chosen_probs_win == pair.chosen_probs_lose == 0.5
    partial = np.array([1.0, 3.0, 0.0, 3.0, 0.0])
    assert (lambda p: (p.winner, p.loser))(select_pair(partial, sigmoid_matrix(partial))) == (1, 2)


def test_ties_first_last_pick_two_different_responses():
    scores = np.zeros(5)
    pair = select_pair(scores, sigmoid_matrix(scores), ties="first_last")
    assert (pair.winner, pair.loser) == (0, 4)
    assert pair.chosen_probs == 0.5
    partial = np.array([1.0, 3.0, 0.0, 3.0, 0.0])
    pair = select_pair(partial, sigmoid_matrix(partial), ties="first_last")
    assert (pair.winner, pair.loser) == (1, 4)


def test_a_response_paired_with_itself_is_neutral_for_every_loss():
    """What the reference's self-pairs do to each loss: no DPO gradient; the squared losses pull logr to 0."""
    import torch
    from pydantic import TypeAdapter

    from sppo.losses import LossConfig

    logr = torch.tensor([0.7], requires_grad=True)
    values = {name: torch.tensor([0.5]) for name in ("chosen_probs", "chosen_probs_win", "chosen_probs_lose")}
    for name in ("sppo", "sppo_single", "sppo_hard", "dpo"):
        loss = TypeAdapter(LossConfig).validate_python({"type": name, "beta": 0.1})
        (grad,) = torch.autograd.grad(loss(logr, logr, values).sum(), logr)
        if name == "dpo":
            assert grad.item() == 0.0
        else:  # the gradient points back to logr = 0, the policy staying at pi_t on this pair
            assert grad.item() > 0.0


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
