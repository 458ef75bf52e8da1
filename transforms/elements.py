"""The values that travel between pipeline stages. Beam-free, picklable."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ClipInfo:
    """What is known about one input clip from its header, before any window is decoded."""
    clip_id: str
    source_uri: str
    duration_seconds: float
    original_sample_rate: int
    channels: int


@dataclass(frozen=True)
class FeatureWindow:
    """Model-ready features of one window of a clip."""
    clip: ClipInfo
    window_index: int
    start_seconds: float
    end_seconds: float
    features: np.ndarray = field(repr=False)   # (max_length, num_mel_bins) float32


@dataclass(frozen=True)
class ScoredWindow:
    clip: ClipInfo
    window_index: int
    start_seconds: float
    end_seconds: float
    logits: np.ndarray = field(repr=False)
    pooled: np.ndarray = field(repr=False)


# What crosses the GroupByKey that reassembles a clip from its windows: scores and
# small records only, never features, so a clip of hours groups in kilobytes.

@dataclass(frozen=True)
class WindowScores:
    """Per-class scores (after activation) of one window of a clip."""
    window_index: int
    start_seconds: float
    end_seconds: float
    scores: np.ndarray = field(repr=False)     # (num_labels,) float32
    embedding: np.ndarray | None = field(default=None, repr=False)  # pooled output, when asked for


@dataclass(frozen=True)
class WindowFailure:
    """One window whose inference raised."""
    window_index: int
    start_seconds: float
    end_seconds: float
    error_type: str
    message: str


@dataclass(frozen=True)
class ClipOutcome:
    """How decoding one input ended: every input gets exactly one.

    ``num_windows`` windows were handed to inference; ``error`` is set when decoding or
    featurising failed, possibly after some windows were already handed on.
    ``clip`` is None when the file could not even be opened.
    """
    source_uri: str
    clip: ClipInfo | None
    num_windows: int
    error: "InputError | None" = None
    silent: bool = False    # every decoded sample below one 16-bit step


@dataclass(frozen=True)
class InputError:
    """One input that could not be labelled, and where it failed."""
    source_uri: str
    stage: str
    error_type: str
    message: str
    clip_id: str | None = None

    @classmethod
    def from_exception(cls, source_uri: str, stage: str, error: BaseException,
                       clip_id: str | None = None) -> "InputError":
        return cls(source_uri=source_uri, stage=getattr(error, "stage", stage),
                   error_type=type(error).__name__, message=str(error)[:2000], clip_id=clip_id)
