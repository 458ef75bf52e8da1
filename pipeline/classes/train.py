"""Fit a custom classifier from examples: one logistic regression per label (scikit-learn) over
L2-normalised embeddings, its cross-validated precision and recall, saved as JSON with the
embedding fingerprint (transforms/scoring/custom_classes.py). Beam-free.

Embeddings of one model differ from each other by little (an untrained network's windows are
all within a few thousandths of cosine), so each feature is standardised before the fit
(StandardScaler) and the scaling is folded back into the weights: the saved classifier is
still one dot product with the normalised embedding. Classes are not reweighted by their
counts: on the 500-file test archive (10 positive, 30 negative examples, tiny random model)
``class_weight="balanced"`` gave precision 0.58 against 0.69 without, recall 1.0 both.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from transforms.scoring.custom_classes import LinearClassifier, now_iso

MIN_PER_CLASS = 2


@dataclasses.dataclass(frozen=True)
class LabelFit:
    label: str
    positives: int
    negatives: int
    folds: int
    precision: float
    recall: float

    def render(self) -> str:
        return (f"  {self.label}: {self.positives} positive, {self.negatives} negative examples; "
                f"{self.folds}-fold cross-validated precision {self.precision:.3f}, recall {self.recall:.3f}")


def _pipeline(regularisation: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=regularisation, max_iter=5000))


def fit_label(x: np.ndarray, y: np.ndarray, label: str,
              regularisation: float = 1.0) -> tuple[np.ndarray, float, LabelFit]:
    """(weights, bias, fit report) for one label; x: normalised embeddings, y: 1 positive, 0 negative."""
    from sklearn.metrics import precision_score, recall_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if min(positives, negatives) < MIN_PER_CLASS:
        raise ValueError(f"label {label}: {positives} positive and {negatives} negative examples; "
                         f"needs at least {MIN_PER_CLASS} of each")
    folds = int(min(5, positives, negatives))
    predicted = cross_val_predict(_pipeline(regularisation), x, y,
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=0))
    report = LabelFit(label, positives, negatives, folds,
                      float(precision_score(y, predicted, zero_division=0)),
                      float(recall_score(y, predicted, zero_division=0)))
    model = _pipeline(regularisation).fit(x, y)
    scaler, logistic = model[0], model[1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weights = logistic.coef_[0] / scale
    bias = float(logistic.intercept_[0] - np.dot(weights, scaler.mean_))
    return weights.astype(np.float32), bias, report


def train_classifier(name: str, labels: list[str], positive: list[bool], vectors: np.ndarray,
                     embedding_fingerprint: str, level: str = "segments",
                     regularisation: float = 1.0) -> tuple[LinearClassifier, list[LabelFit]]:
    """One classifier holding every label of the examples: per label, its rows (positives and
    negatives of that label) fit that label's regression."""
    labels_arr, positive_arr = np.asarray(labels), np.asarray(positive, bool)
    names = sorted(set(labels))
    weights, biases, reports = [], [], []
    for label in names:
        rows = labels_arr == label
        w, b, report = fit_label(vectors[rows], positive_arr[rows].astype(int), label, regularisation)
        weights.append(w)
        biases.append(b)
        reports.append(report)
    metrics = {r.label: {"positives": r.positives, "negatives": r.negatives, "folds": r.folds,
                         "cv_precision": r.precision, "cv_recall": r.recall} for r in reports}
    classifier = LinearClassifier(name=name, labels=tuple(names), weights=np.stack(weights),
                                  bias=np.asarray(biases, np.float32),
                                  thresholds=np.full(len(names), 0.5, np.float32),
                                  embedding_fingerprint=embedding_fingerprint, level=level, metrics=metrics,
                                  trained_at=now_iso())
    return classifier, reports
