"""Beam glue: RunInference results -> keyed window scores; grouped clips -> table rows.

The numeric work (activation, aggregation, the partial-failure rule) is in
transforms/scoring/labels.py and transforms/scoring/aggregate.py.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from transforms.scoring.aggregate import assemble_clip, duplicate_input_errors
from transforms.elements import InputError, WindowFailure, WindowScores
from transforms.scoring.labels import LabelSelection, activate
from transforms.progress import ProgressSettings
from transforms.run_stats import INFERENCE_BATCHES, TALLY, WINDOWS_SCORED
from transforms.scoring.rows import clip_row, error_row, segment_row

# CoGroupByKey tags of the values grouped per clip id.
OUTCOME, SCORES, FAILURES = "outcome", "scores", "failures"


class ScoreWindows(beam.DoFn):
    """PredictionResult -> (clip_id, WindowScores), or (clip_id, WindowFailure) on 'failures';
    windows scored and inference batches as tallies on 'tally'.

    Only the activated scores travel on: features and pooled embeddings stay behind, so
    the GroupByKey that follows holds a few numbers per window.
    """

    def __init__(self, activation: str, keep_embeddings: bool = False,
                 progress: ProgressSettings | None = None):
        self._activation = activation
        self._progress_settings = progress or ProgressSettings()
        self._keep_embeddings = keep_embeddings
        self._scored = beam.metrics.Metrics.counter("audio_labelling", "windows_scored")

    def setup(self):
        self._progress = self._progress_settings.tally()

    def finish_bundle(self):
        self._progress.flush()

    def process(self, result: PredictionResult):
        window, scored = result.example, result.inference
        key = window.clip.clip_id
        if isinstance(scored, Exception):
            yield beam.pvalue.TaggedOutput(FAILURES, (key, WindowFailure(
                window.window_index, window.start_seconds, window.end_seconds,
                type(scored).__name__, str(scored)[:500])))
            # The clip's error is counted when it is assembled (AssembleClips).
            return
        self._scored.inc()
        self._progress.add(windows_scored=1)
        yield beam.pvalue.TaggedOutput(TALLY, (WINDOWS_SCORED, 1))
        if getattr(scored, "opens_batch", False):
            yield beam.pvalue.TaggedOutput(TALLY, (INFERENCE_BATCHES, 1))
        yield key, WindowScores(window.window_index, window.start_seconds, window.end_seconds,
                                activate(scored.logits, self._activation),
                                scored.pooled if self._keep_embeddings else None)


class AssembleClips(beam.DoFn):
    """(clip_id, {outcome, scores, failures}) -> one clips row and its segments rows
    ('segments' output), or one InputError ('errors' output)."""

    def __init__(self, selection: LabelSelection, activation: str, aggregation: str, model_id: str,
                 model_sha256: str, run_id: str, emit_scores: bool = False,
                 emit_embeddings: bool = False, labelling_fingerprint: str | None = None,
                 progress: ProgressSettings | None = None):
        self._progress_settings = progress or ProgressSettings()
        self._selection = selection
        self._activation = activation
        self._aggregation = aggregation
        self._model_id = model_id
        self._model_sha256 = model_sha256
        self._run_id = run_id
        self._emit_scores = emit_scores
        self._emit_embeddings = emit_embeddings
        self._fingerprint = labelling_fingerprint
        self._labelled = beam.metrics.Metrics.counter("audio_labelling", "clips_labelled")

    def _optional_columns(self, scores, embedding) -> dict:
        # Always both keys: a column a run did not ask for is null, never missing.
        return {"scores": self._selection.output_scores(scores).astype("float32") if self._emit_scores else None,
                "embedding": embedding.astype("float32") if self._emit_embeddings else None}

    def setup(self):
        self._progress = self._progress_settings.tally()

    def finish_bundle(self):
        self._progress.flush()

    def process(self, keyed):
        _, grouped = keyed
        outcomes = list(grouped[OUTCOME])
        if len(outcomes) != 1:
            for error in duplicate_input_errors(outcomes):
                self._progress.add(errors=1)
                yield beam.pvalue.TaggedOutput("errors", error)
            return
        result = assemble_clip(outcomes[0], grouped[SCORES], grouped[FAILURES], self._aggregation)
        if isinstance(result, InputError):
            if outcomes[0].error is None:   # a decoding failure was counted when it happened
                self._progress.add(errors=1)
            yield beam.pvalue.TaggedOutput("errors", result)
            return
        self._labelled.inc()
        self._progress.add(clips_labelled=1)
        row = clip_row(result.clip, self._selection.select(result.scores), self._activation,
                       self._model_id, self._model_sha256, self._run_id,
                       num_windows=len(result.windows), aggregation=result.aggregation,
                       silent=result.silent, labelling_fingerprint=self._fingerprint)
        yield {**row, **self._optional_columns(result.scores, result.embedding)}
        for window in result.windows:
            segment = segment_row(result.clip, window, self._selection.select(window.scores), self._run_id,
                                  labelling_fingerprint=self._fingerprint)
            yield beam.pvalue.TaggedOutput(
                "segments", {**segment, **self._optional_columns(window.scores, window.embedding)})


class ErrorsToRows(beam.DoFn):
    def __init__(self, run_id: str, labelling_fingerprint: str | None = None):
        self._run_id = run_id
        self._fingerprint = labelling_fingerprint
        self._errored = beam.metrics.Metrics.counter("audio_labelling", "inputs_errored")

    def process(self, error):
        row = error_row(error, self._run_id, self._fingerprint)
        self._errored.inc()
        # One counter per stage/type, so the runner's metrics say what went wrong, not only how often.
        beam.metrics.Metrics.counter("audio_labelling_errors", f"{row['stage']}/{row['error_type']}").inc()
        yield row
