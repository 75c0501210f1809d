"""From a judge's preference matrix to an SPPO training pair (design.md, "The SPPO math").

For K responses with P[i, j] = P(y_i > y_j | x):
  win rate w_i = P(y_i > pi_t | x) = mean_j P[i, j]  (the diagonal 1/2 included, as in the reference)
  winner = argmax of the judge's scores, loser = argmin, ties broken by position (see select_pair)
  chosen_probs = P[w, l], chosen_probs_win = w_w, chosen_probs_lose = w_l
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PreferencePair:
    winner: int
    loser: int
    chosen_probs: float
    chosen_probs_win: float
    chosen_probs_lose: float


def win_rates(matrix: np.ndarray) -> np.ndarray:
    return np.asarray(matrix, dtype=np.float64).mean(axis=1)


def check_preference_matrix(matrix: np.ndarray, where: str = "judge", atol: float = 1e-6) -> None:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{where}: preference matrix must be K x K, got shape {m.shape}")
    if not np.isfinite(m).all():
        i, j = map(int, np.argwhere(~np.isfinite(m))[0])
        raise ValueError(
            f"{where}: preference matrix holds {m[i, j]} at [{i}][{j}]; probabilities must be finite "
            "(a judge score was infinite or NaN?)"
        )
    if ((m < 0) | (m > 1)).any():
        i, j = map(int, np.argwhere((m < 0) | (m > 1))[0])
        raise ValueError(f"{where}: preference matrix holds {m[i, j]} at [{i}][{j}], outside [0, 1]")
    if not np.allclose(m + m.T, 1.0, atol=atol) or not np.allclose(np.diag(m), 0.5, atol=atol):
        raise ValueError(f"{where}: preference matrix must satisfy P + P^T = 1 with 1/2 on the diagonal")


def check_scores(scores: np.ndarray, where: str = "judge") -> None:
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        i = int(np.argmax(~np.isfinite(s)))
        raise ValueError(f"{where}: response {i} got the score {s[i]}; a judge's scores must be finite")


def all_tied(scores: np.ndarray) -> bool:
    """The judge could not tell any of the responses apart."""
    scores = np.asarray(scores, dtype=np.float64)
    return bool(scores.max() == scores.min())


def select_pair(scores: np.ndarray, matrix: np.ndarray, ties: str = "reference") -> PreferencePair:
    """Best and worst response.

    ties "reference" (as uclaml/SPPO's scripts: numpy argmax / argmin): the first of the best and the first of
    the worst, so an all-tied prompt pairs a response with itself (a zero DPO gradient; sppo and sppo_hard pull
    its log-ratio to 0). "first_last": the first of the best and the last of the worst, so an all-tied prompt
    still pairs two different responses, at probability 1/2."""
    scores = np.asarray(scores, dtype=np.float64)
    winner = int(np.argmax(scores))
    if ties == "first_last":
        loser = int(len(scores) - 1 - np.argmin(scores[::-1]))
    else:
        loser = int(np.argmin(scores))
    rates = win_rates(matrix)
    return PreferencePair(
        winner=winner,
        loser=loser,
        chosen_probs=float(matrix[winner][loser]),
        chosen_probs_win=float(rates[winner]),
        chosen_probs_lose=float(rates[loser]),
    )
