"""The values that travel between pipeline stages. Beam-free, picklable."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

import numpy as np

from transforms.io.names import record_name


@dataclass(frozen=True)
class DiscoveryRequest:
    """Everything the user asked to label: --input patterns and --input_manifest files."""
    inputs: tuple[str, ...] = ()
    manifests: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceRef:
    """One discovered object: a plain audio file or a tar shard of clips.

    ``uri`` is valid UTF-8: a name that is not is recorded percent-escaped, and its bytes
    travel in ``raw`` to open it by (transforms/io/names.py)."""
    uri: str
    kind: str          # "file" or "shard"
    raw: bytes | None = None

    @property
    def location(self) -> str:
        """What to open."""
        return self.uri if self.raw is None else os.fsdecode(self.raw)


@dataclass(frozen=True)
class ClipSource:
    """Where one clip's bytes come from.

    A plain file is read from ``source_uri`` when it is decoded; a tar member's
    bytes travel in ``data`` (tar streams are read once, front to back).
    Clip identity: a file's URI, or ``<shard uri>#<member name>``.
    """
    clip_id: str
    source_uri: str
    shard_uri: str | None = None
    member_name: str | None = None
    meta: str | None = None                       # JSON text of the sample's .json sidecar
    data: bytes | None = field(default=None, repr=False)
    source_version: str | None = None             # Storage.version of the file, or of the shard
    raw: bytes | None = None                      # the file's name when not UTF-8 (see SourceRef)

    @property
    def location(self) -> str:
        """What to open (plain files)."""
        return self.source_uri if self.raw is None else os.fsdecode(self.raw)

    @classmethod
    def of(cls, value: "ClipSource | str") -> "ClipSource":
        return value if isinstance(value, ClipSource) else cls(clip_id=value, source_uri=value)

    def clip_info(self, duration_seconds: float, original_sample_rate: int, channels: int) -> "ClipInfo":
        return ClipInfo(clip_id=self.clip_id, source_uri=self.source_uri,
                        duration_seconds=duration_seconds, original_sample_rate=original_sample_rate,
                        channels=channels, shard_uri=self.shard_uri, member_name=self.member_name,
                        meta=self.meta, source_version=self.source_version)

    def error(self, stage: str, error: BaseException) -> "InputError":
        """The clip's error row; its message names the clip (its id: credentials scrubbed)."""
        found = InputError.from_exception(self.source_uri, stage, error, self.clip_id,
                                          shard_uri=self.shard_uri, member_name=self.member_name)
        return replace(found, message=naming_clip(self.clip_id, found.message))


# How Python shows an object without a name of its own: libsndfile's messages show the file
# object they were handed ("Error opening <fsspec...LocalFileOpener object at 0x7f...>").
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def naming_clip(clip_id: str, message: str) -> str:
    """``message`` with file-object reprs replaced by the clip id, and the id in front unless
    the message names it already."""
    message = _OBJECT_REPR.sub(repr(clip_id), message)
    return message if clip_id in message else f"{clip_id}: {message}"


@dataclass(frozen=True)
class ClipInfo:
    """What is known about one input clip: from its header before any window is decoded; once
    decoding has ended (the ClipOutcome's copy), ``duration_seconds`` is what was decoded."""
    clip_id: str
    source_uri: str
    duration_seconds: float
    original_sample_rate: int
    channels: int
    shard_uri: str | None = None
    member_name: str | None = None
    meta: str | None = None
    source_version: str | None = None
    declared_duration_seconds: float | None = None   # what the header claims
    truncated: bool = False                           # decoded less than the header claims


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
    opens_batch: bool = False   # the first scored window of its inference batch (to count batches)


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
    shard_uri: str | None = None
    member_name: str | None = None

    def __post_init__(self):
        # Every error row is recorded as names are (transforms/io/names.py), whatever its maker
        # passed: a pattern, path or message may hold a name that is not UTF-8 (a FileNotFoundError
        # quotes it), which Beam's coder and Parquet refuse. Valid UTF-8 passes unchanged.
        for name in ("source_uri", "message", "clip_id", "shard_uri", "member_name"):
            object.__setattr__(self, name, record_name(getattr(self, name)))

    @classmethod
    def from_exception(cls, source_uri: str, stage: str, error: BaseException,
                       clip_id: str | None = None, shard_uri: str | None = None,
                       member_name: str | None = None) -> "InputError":
        # Escaped before the cut, so the cut never splits an escape.
        return cls(source_uri=source_uri, stage=getattr(error, "stage", stage),
                   error_type=type(error).__name__, message=record_name(str(error))[:2000],
                   clip_id=clip_id, shard_uri=shard_uri, member_name=member_name)
