"""Beam glue: RunInference results -> clips-table rows, failures -> errors-table rows."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import PredictionResult

from transforms.elements import InputError
from transforms.labels import activate, top_k
from transforms.rows import clip_row, error_row


class PredictionsToRows(beam.DoFn):
    def __init__(self, labels: list[str], activation: str, k: int, model_id: str,
                 model_sha256: str, run_id: str):
        self._labels = labels
        self._activation = activation
        self._k = k
        self._model_id = model_id
        self._model_sha256 = model_sha256
        self._run_id = run_id
        self._labelled = beam.metrics.Metrics.counter("audio_labelling", "clips_labelled")

    def process(self, result: PredictionResult):
        window, scored = result.example, result.inference
        if isinstance(scored, Exception):
            clip = window.clip
            error = InputError.from_exception(clip.source_uri, "inference", scored, clip.clip_id,
                                              shard_uri=clip.shard_uri, member_name=clip.member_name)
            yield beam.pvalue.TaggedOutput("errors", error_row(error, self._run_id))
            return
        scores = activate(scored.logits, self._activation)
        self._labelled.inc()
        yield clip_row(scored.clip, top_k(scores, self._labels, self._k), self._activation,
                       self._model_id, self._model_sha256, self._run_id)


class ErrorsToRows(beam.DoFn):
    def __init__(self, run_id: str):
        self._run_id = run_id
        self._errored = beam.metrics.Metrics.counter("audio_labelling", "inputs_errored")

    def process(self, error):
        row = error if isinstance(error, dict) else error_row(error, self._run_id)
        self._errored.inc()
        yield row
