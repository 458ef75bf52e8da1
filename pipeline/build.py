"""Assemble the labelling pipeline.

    discover -> decode + window + fbank (streaming) -> RunInference -> window scores
             -> CoGroupByKey(clip id) -> clips + segments rows, or an error row -> Parquet

Windows of all files flow through RunInference together, so its batches mix
windows of different files. Only scores (never features) are grouped per clip.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from schemas.tables import CLIPS_SCHEMA, ERRORS_SCHEMA, SEGMENTS_SCHEMA, with_optional_outputs
from transforms.checkpoint import CheckpointInfo
from transforms.discover import ExpandInputs
from transforms.featurize import OUTCOMES, DecodeAndFeaturize
from transforms.label_rows import FAILURES, OUTCOME, SCORES, AssembleClips, ErrorsToRows, ScoreWindows
from transforms.labels import LabelSelection
from transforms.mindspore_inference import MindSporeASTModelHandler


def table_prefix(output: str, run_id: str, table: str) -> str:
    return f"{output.rstrip('/')}/{run_id}/{table}/part"


def build_pipeline(p: beam.Pipeline, opts, checkpoint: CheckpointInfo, run_id: str,
                   selection: LabelSelection) -> None:
    discovered = (
        p
        | "Inputs" >> beam.Create(opts.input)
        | "Discover" >> beam.ParDo(ExpandInputs()).with_outputs("errors", main="uris"))
    # Discovery runs on one worker; the reshuffle lets decoding and inference fan out.
    # Decoding, inference and scoring are then fused: each window goes on to batching as
    # soon as it is cut, so a worker holds about one batch of features at a time.
    featurized = (
        discovered.uris
        | "SpreadOverWorkers" >> beam.Reshuffle()
        | "DecodeAndFbank" >> beam.ParDo(DecodeAndFeaturize(
            checkpoint.features, max_duration_seconds=opts.max_duration_seconds,
            hop_seconds=opts.hop_seconds, progress_seconds=opts.progress_seconds)
        ).with_outputs(OUTCOMES, main="windows"))
    handler = MindSporeASTModelHandler(checkpoint.uri, backend=opts.backend,
                                       batch_size=opts.batch_size, device=opts.device)
    scored = (
        featurized.windows
        | "Infer" >> RunInference(handler)
        | "Score" >> beam.ParDo(ScoreWindows(
            opts.activation, keep_embeddings=bool(opts.emit_embeddings), progress_seconds=opts.progress_seconds)).with_outputs(FAILURES, main="scores"))
    assembled = (
        {OUTCOME: featurized[OUTCOMES], SCORES: scored.scores, FAILURES: scored[FAILURES]}
        | "GroupWindowsByClip" >> beam.CoGroupByKey()
        | "AssembleClips" >> beam.ParDo(AssembleClips(
            selection, opts.activation, opts.aggregate, checkpoint.model_id, checkpoint.weights_sha256,
            run_id, emit_scores=opts.emit_scores, embedding_dtype=opts.emit_embeddings)
        ).with_outputs("segments", "errors", main="clips"))
    errors = (
        (discovered.errors, assembled.errors)
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> beam.ParDo(ErrorsToRows(run_id)))
    assembled.clips | "WriteClips" >> beam.io.WriteToParquet(
        table_prefix(opts.output, run_id, "clips"),
        with_optional_outputs(CLIPS_SCHEMA, opts.emit_scores, opts.emit_embeddings), file_name_suffix=".parquet")
    assembled.segments | "WriteSegments" >> beam.io.WriteToParquet(
        table_prefix(opts.output, run_id, "segments"),
        with_optional_outputs(SEGMENTS_SCHEMA, opts.emit_scores, opts.emit_embeddings), file_name_suffix=".parquet")
    errors | "WriteErrors" >> beam.io.WriteToParquet(
        table_prefix(opts.output, run_id, "errors"), ERRORS_SCHEMA, file_name_suffix=".parquet")
