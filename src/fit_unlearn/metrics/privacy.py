"""Membership inference (Min-K% prob AUC) and extraction strength aggregates."""

from __future__ import annotations

from collections.abc import Sequence


def min_k_score(token_logprobs: Sequence[float], k: float = 0.2) -> float:
    """Mean of the lowest ``k`` fraction of token log-probs (Shi et al., 2024); higher = more member-like."""
    if not token_logprobs:
        return float("-inf")
    n = max(1, int(len(token_logprobs) * k))
    return sum(sorted(token_logprobs)[:n]) / n


def mia_auc(member_stats: Sequence[dict], nonmember_stats: Sequence[dict], k: float = 0.2) -> float | None:
    """ROC AUC of Min-K% prob separating members (e.g. forget) from non-members (holdout).
    0.5 = indistinguishable (the goal after unlearning); ~1 = memorised."""
    if not member_stats or not nonmember_stats:
        return None
    from sklearn.metrics import roc_auc_score

    scores = [min_k_score(s["token_logprobs"], k) for s in (*member_stats, *nonmember_stats)]
    labels = [1] * len(member_stats) + [0] * len(nonmember_stats)
    return float(roc_auc_score(labels, scores))


def mean_extraction_strength(stats: Sequence[dict]) -> float:
    return sum(s["extraction_strength"] for s in stats) / len(stats) if stats else 0.0
