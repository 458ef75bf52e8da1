"""The values that travel between pipeline stages. Beam-free, picklable."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ClipInfo:
    """What is known about one input clip once it is decoded."""
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
