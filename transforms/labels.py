"""Turn model logits into scores and ranked labels. Beam-free."""
from __future__ import annotations

import numpy as np

ACTIVATIONS = ("sigmoid", "softmax")


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Scores from logits along the last axis.

    sigmoid: independent per class, for multi-label checkpoints (AudioSet).
    softmax: one distribution over classes, for single-label ones (ESC-50).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid":
        # Written with exp(-|x|) so large logits of either sign cannot overflow.
        e = np.exp(-np.abs(logits))
        scores = np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    elif activation == "softmax":
        shifted = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        scores = e / e.sum(axis=-1, keepdims=True)
    else:
        raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    return scores.astype(np.float32)


def top_k(scores: np.ndarray, labels: list[str], k: int) -> list[dict]:
    """The k best classes of one score vector, best first; ties keep class order."""
    k = min(k, len(scores))
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"label": labels[i], "index": int(i), "score": float(scores[i])} for i in order]
