"""Clip-level scores from window-level ones, and the rule for clips whose windows partly failed.

Beam-free. The pipeline groups each clip's window scores by clip id and hands them here.

Aggregation works on per-class SCORES, i.e. after the activation (sigmoid or softmax), and
the clip's top-k labels are taken from the aggregated vector:

* ``max``  (default): a class scores as high as its best window. Suits long recordings, where an
  event that occupies one window out of hundreds should still label the file.
* ``mean``: the unweighted mean over windows (the end-aligned last window counts as one window,
  so audio it shares with its predecessor weighs twice).

Partial failure rule: a clip is labelled only when every one of its windows was decoded and
scored. If decoding fails part-way through the file (corrupt data, NaN samples, ...) the clip
goes to the errors table with the decode stage's error; if any window's inference failed it
goes there with stage ``inference`` and a message naming the failed windows. In both cases none
of its windows appear in the segments table, so the segments table only ever holds windows of
clips in the clips table, and every input lands in exactly one of clips / errors.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from transforms.elements import ClipInfo, ClipOutcome, InputError, WindowFailure, WindowScores

AGGREGATIONS = ("max", "mean")
_NAMED_FAILURES = 5   # windows named one by one in an error message; the rest are counted


def aggregate_scores(scores: np.ndarray, how: str) -> np.ndarray:
    """(num_windows, num_classes) -> (num_classes,) float32."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[0] == 0:
        raise ValueError(f"expected a non-empty (windows, classes) array, got shape {scores.shape}")
    if how == "max":
        return scores.max(axis=0)
    if how == "mean":
        return scores.mean(axis=0, dtype=np.float64).astype(np.float32)
    raise ValueError(f"unknown aggregation {how!r}; choose one of {AGGREGATIONS}")


@dataclass(frozen=True)
class AssembledClip:
    clip: ClipInfo
    windows: list[WindowScores]          # in window order
    scores: np.ndarray = field(repr=False)   # aggregated, (num_classes,)
    aggregation: str
    silent: bool = False
    embedding: np.ndarray | None = field(default=None, repr=False)  # mean of the windows' pooled outputs


def _describe(failure: WindowFailure) -> str:
    return (f"window {failure.window_index} ({failure.start_seconds:.2f}-{failure.end_seconds:.2f} s): "
            f"{failure.error_type}: {failure.message}")


def assemble_clip(outcome: ClipOutcome, scores: Iterable[WindowScores],
                  failures: Iterable[WindowFailure], aggregation: str) -> AssembledClip | InputError:
    """One clip's labels from all its windows, or the error row it must get instead."""
    uri = outcome.source_uri
    clip_id = outcome.clip.clip_id if outcome.clip else uri
    where = {"shard_uri": outcome.clip.shard_uri, "member_name": outcome.clip.member_name} if outcome.clip else {}
    if outcome.error is not None:
        error = outcome.error
        if outcome.num_windows:
            error = dataclasses.replace(
                error, message=f"{error.message} (after {outcome.num_windows} window(s); the clip is not "
                               f"labelled from part of the file)"[:2000])
        return error
    failures = sorted(failures, key=lambda f: f.window_index)
    if failures:
        named = "; ".join(_describe(f) for f in failures[:_NAMED_FAILURES])
        more = f"; and {len(failures) - _NAMED_FAILURES} more" if len(failures) > _NAMED_FAILURES else ""
        return InputError(uri, "inference", failures[0].error_type,
                          f"inference failed for {len(failures)} of {outcome.num_windows} window(s): "
                          f"{named}{more}"[:2000], clip_id, **where)
    windows = sorted(scores, key=lambda w: w.window_index)
    indices = [w.window_index for w in windows]
    if indices != list(range(outcome.num_windows)) or not windows:
        return InputError(uri, "aggregate", "WindowsMissing",
                          f"expected windows 0..{outcome.num_windows - 1}, got scores for "
                          f"{len(windows)} window(s) {indices[:10]}{'...' if len(indices) > 10 else ''}",
                          clip_id, **where)
    stacked = np.stack([w.scores for w in windows])
    embedding = None
    if windows[0].embedding is not None:
        # A clip's embedding is the mean of its windows' pooled outputs (for one window: that output).
        embedding = np.mean(np.stack([w.embedding for w in windows]), axis=0, dtype=np.float32)
    return AssembledClip(clip=outcome.clip, windows=windows,
                         scores=aggregate_scores(stacked, aggregation), aggregation=aggregation,
                         silent=outcome.silent, embedding=embedding)


def duplicate_input_errors(outcomes: list[ClipOutcome]) -> list[InputError]:
    """When one clip id arrives more than once (the same file given twice), each copy becomes an
    error row: their windows cannot be told apart, and accounting stays exact."""
    return [InputError(o.source_uri, "aggregate", "DuplicateInput",
                       f"this input was given {len(outcomes)} times in one run; give each file once",
                       o.clip.clip_id if o.clip else o.source_uri,
                       o.clip.shard_uri if o.clip else None, o.clip.member_name if o.clip else None)
            for o in outcomes]
