"""Custom classes: a linear classifier per label over the model's embeddings, saved as JSON and
applied with numpy alone (the workers need no scikit-learn). Beam-free.

A classifier scores L2-normalised embeddings (what the index stores):
``score = sigmoid(w . x + b)``, one (w, b) per label; a window is ``positive`` for a label when
its score reaches the label's threshold (0.5 unless the file says otherwise). The file records
the embedding fingerprint it was trained on (transforms/scoring/fingerprint.py): embeddings of
another fingerprint are refused. Its id is a name plus the first 12 hex digits of the SHA-256 of
its canonical JSON, so a changed classifier never writes into an earlier one's partitions.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re

import numpy as np

from transforms.scoring.fingerprint import canonical_json

FORMAT_VERSION = 1
CLASSIFIER_FILE = "classifier.json"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclasses.dataclass(frozen=True)
class LinearClassifier:
    name: str
    labels: tuple[str, ...]
    weights: np.ndarray            # (labels, dim) float32
    bias: np.ndarray               # (labels,) float32
    thresholds: np.ndarray         # (labels,) float32
    embedding_fingerprint: str
    level: str = "segments"        # which embeddings it was trained on
    metrics: dict = dataclasses.field(default_factory=dict)   # cross-validated precision/recall per label
    trained_at: str = ""

    def __post_init__(self):
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"classifier name {self.name!r}: use 1-64 letters, digits, '_', '.', '-'")
        n = len(self.labels)
        if self.weights.ndim != 2 or self.weights.shape[0] != n or self.bias.shape != (n,) \
                or self.thresholds.shape != (n,):
            raise ValueError(f"classifier {self.name}: weights {self.weights.shape}, bias {self.bias.shape}, "
                             f"thresholds {self.thresholds.shape} do not fit {n} labels")

    @property
    def dim(self) -> int:
        return int(self.weights.shape[1])

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "name": self.name, "labels": list(self.labels),
                "weights": self.weights.astype(np.float32).tolist(), "bias": self.bias.astype(np.float32).tolist(),
                "thresholds": self.thresholds.astype(np.float32).tolist(),
                "embedding_fingerprint": self.embedding_fingerprint, "level": self.level,
                "input": "l2-normalised embedding", "metrics": self.metrics, "trained_at": self.trained_at}

    @property
    def classifier_id(self) -> str:
        return f"{self.name}-{hashlib.sha256(canonical_json(self.to_json()).encode()).hexdigest()[:12]}"

    @classmethod
    def from_json(cls, doc: dict) -> "LinearClassifier":
        if doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"classifier file format {doc.get('format_version')!r} is not {FORMAT_VERSION}")
        return cls(name=doc["name"], labels=tuple(doc["labels"]),
                   weights=np.asarray(doc["weights"], np.float32).reshape(len(doc["labels"]), -1),
                   bias=np.asarray(doc["bias"], np.float32), thresholds=np.asarray(doc["thresholds"], np.float32),
                   embedding_fingerprint=doc["embedding_fingerprint"], level=doc.get("level", "segments"),
                   metrics=doc.get("metrics") or {}, trained_at=doc.get("trained_at", ""))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, dim) raw embeddings -> (n, labels) scores in [0, 1] (normalised here)."""
        x = np.asarray(embeddings, np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"embeddings of shape {x.shape}; classifier {self.name} takes (n, {self.dim})")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
        logits = x @ self.weights.T + self.bias
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def dumps(classifier: LinearClassifier) -> bytes:
    return json.dumps(classifier.to_json(), indent=1).encode()


def loads(data: bytes | str) -> LinearClassifier:
    return LinearClassifier.from_json(json.loads(data))
