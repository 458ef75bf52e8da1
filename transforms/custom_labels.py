"""Beam glue: score the stored window embeddings of published runs with a custom classifier
(transforms/scoring/custom_classes.py) into custom_labels rows; no model runs.

    segments files -> (clip id, window and its scores) --+
                                                         +-> CoGroupByKey(clip id) -> rows (one per window
    clips files    -> (clip id, labelled_at) ------------+       and label) + tallies (windows, clips, positive)

Scores are computed as the segments files are read, one matrix product per Arrow batch; the join
carries the windows without their embeddings.

The join gives every row its clip's ``labelled_at`` (readers apply the current-labels rule to
custom_labels as to clips) and checks that every window has its clip: a window without one, two
clip rows for one id, or a missing embedding fails the job (the run is not what its manifest
says), it never drops a row.
"""
from __future__ import annotations

import datetime

import apache_beam as beam
import pyarrow.parquet as pq

from transforms.io.incremental import iter_parquet_rows
from transforms.io.storage import Storage, resolve_storage_options
from transforms.scoring.custom_classes import LinearClassifier
from transforms.scoring.embeddings import embedding_matrix

SEGMENT_COLUMNS = ["clip_id", "source_uri", "window_index", "start_seconds", "end_seconds"]
WINDOWS, ROWS, CLIPS, POSITIVE = "windows", "rows", "clips", "positive"
TALLIES = (WINDOWS, CLIPS, POSITIVE)   # what the job counts; rows (windows x labels) the launcher derives
READ_BATCH = 4096


class ReadParquetRows(beam.DoFn):
    """A Parquet file URI -> (clip_id, row) for each row (only ``columns``), a batch at a time."""

    def __init__(self, columns: list[str], storage_options: dict | None = None):
        self._columns = list(columns)
        self._storage_options = storage_options or {}
        self._storage = None

    def setup(self):
        self._storage = Storage(resolve_storage_options(self._storage_options))

    def process(self, uri: str):
        with self._storage.open(uri) as f:
            for row in iter_parquet_rows(f, self._columns, READ_BATCH):
                yield row["clip_id"], row


class ScoreSegmentFile(beam.DoFn):
    """A segments file URI -> (clip_id, window) for each row, scored a batch at a time: one
    ``classifier.scores`` per Arrow batch, over the embedding column read as a matrix (no Python
    lists). A window carries its ``SEGMENT_COLUMNS`` and its ``scores`` (one per label), not its
    embedding; a row without one fails the job."""

    def __init__(self, classifier_json: dict, run_id: str, storage_options: dict | None = None):
        self._doc = classifier_json
        self._run_id = run_id
        self._storage_options = storage_options or {}
        self._storage = self._classifier = None

    def setup(self):
        self._storage = Storage(resolve_storage_options(self._storage_options))
        self._classifier = LinearClassifier.from_json(self._doc)

    def process(self, uri: str):
        with self._storage.open(uri) as f:
            parquet = pq.ParquetFile(f)
            for batch in parquet.iter_batches(batch_size=READ_BATCH, columns=SEGMENT_COLUMNS + ["embedding"],
                                              use_threads=False):
                if not batch.num_rows:
                    continue
                scores = self._classifier.scores(
                    embedding_matrix(batch.column("embedding"), f"run {self._run_id}: segments file {uri}"))
                windows = batch.select(SEGMENT_COLUMNS).to_pylist()
                for window, window_scores in zip(windows, scores.tolist()):
                    window["scores"] = window_scores
                    yield window["clip_id"], window


class ScoreClipWindows(beam.DoFn):
    """(clip_id, {"windows": [...], "clips": [...]}) -> custom_labels rows (one per window and
    label, from the windows' scores), and tallies."""

    def __init__(self, classifier_json: dict, run_id: str):
        self._doc = classifier_json
        self._run_id = run_id
        self._classifier = None

    def setup(self):
        self._classifier = LinearClassifier.from_json(self._doc)
        self._id = self._classifier.classifier_id

    def process(self, element):
        clip_id, grouped = element
        windows, clips = list(grouped[WINDOWS]), list(grouped[CLIPS])
        if len(clips) != 1:
            raise ValueError(f"run {self._run_id}: clip {clip_id} has {len(clips)} clips rows for "
                             f"{len(windows)} segments rows; the run's tables do not match its manifest")
        if not windows:
            return   # a clip whose windows went elsewhere cannot happen; a clip without windows scores nothing
        windows.sort(key=lambda w: w["window_index"])
        labelled_at = clips[0]["labelled_at"]
        scored_at = datetime.datetime.now(datetime.timezone.utc)
        c = self._classifier
        thresholds = c.thresholds.tolist()
        positive = 0
        for window in windows:
            for label, score, threshold in zip(c.labels, window["scores"], thresholds):
                positive += score >= threshold
                yield {"classifier_id": self._id, "label": label, "clip_id": clip_id,
                       "source_uri": window["source_uri"], "window_index": window["window_index"],
                       "start_seconds": window["start_seconds"], "end_seconds": window["end_seconds"],
                       "score": score, "positive": score >= threshold, "run_id": self._run_id,
                       "labelled_at": labelled_at, "scored_at": scored_at}
        yield beam.pvalue.TaggedOutput("tally", (WINDOWS, len(windows)))
        yield beam.pvalue.TaggedOutput("tally", (CLIPS, 1))
        yield beam.pvalue.TaggedOutput("tally", (POSITIVE, positive))


class SumTallies(beam.CombineFn):
    """(name, n) -> {name: total}; every tally present (0 when nothing came)."""

    def create_accumulator(self):
        return dict.fromkeys(TALLIES, 0)

    def add_input(self, acc, tally):
        acc[tally[0]] = acc.get(tally[0], 0) + tally[1]
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for acc in accs:
            for k, v in acc.items():
                out[k] = out.get(k, 0) + v
        return out

    def extract_output(self, acc):
        return acc
