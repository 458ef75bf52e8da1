"""Assemble the labelling pipeline.

    discover (files, globs, manifests) -> Reshuffle -> read sources (tar shards streamed)
      -> decode + window + fbank (streaming) -> RunInference -> window scores
      -> CoGroupByKey(clip id) -> clips + segments rows, or an error row -> Parquet

Windows of all files flow through RunInference together, so its batches mix
windows of different files. Only scores (never features) are grouped per clip.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.parquetio import ReadAllFromParquet
from apache_beam.ml.inference.base import RunInference

from schemas.tables import CLIPS_SCHEMA, ERRORS_SCHEMA, SEGMENTS_SCHEMA, with_optional_outputs
from transforms.io.checkpoint import CheckpointInfo
from transforms.discover import DiscoverSources
from transforms.elements import DiscoveryRequest
from transforms.featurize import OUTCOMES, DecodeAndFeaturize
from transforms.label_rows import FAILURES, OUTCOME, SCORES, AssembleClips, ErrorsToRows, ScoreWindows
from transforms.scoring.labels import LabelSelection
from transforms.mindspore_inference import MindSporeASTModelHandler
from transforms.read_sources import ReadSources
from transforms.io.storage import parse_storage_options
from transforms.write_tables import WriteTable, filesystem_settings


def table_prefix(output: str, run_id: str, table: str) -> str:
    return f"{output.rstrip('/')}/{run_id}/{table}/part"


def build_pipeline(p: beam.Pipeline, opts, checkpoint: CheckpointInfo, run_id: str,
                   selection: LabelSelection, storage_options: dict | None = None,
                   previous_clip_files: tuple[str, ...] = ()) -> None:
    """``storage_options``: fsspec options without credentials (see pipeline/storage_settings.py).
    ``previous_clip_files``: clips-table files of finished earlier runs (--skip_labelled); their
    clips, labelled by the same weights from the same source version, are skipped."""
    if storage_options is None:
        storage_options = parse_storage_options(getattr(opts, "storage_options", None))
    request = DiscoveryRequest(inputs=tuple(opts.input or ()),
                               manifests=tuple(getattr(opts, "input_manifest", None) or ()))
    discovered = (
        p
        | "Inputs" >> beam.Create([request])
        | "Discover" >> beam.ParDo(DiscoverSources(storage_options)).with_outputs("errors", main="sources"))
    # Discovery runs on one worker; the reshuffle spreads files and shards over workers. Reading,
    # decoding, inference and scoring are then fused: each window goes on to batching as soon as
    # it is cut, so a worker holds about one batch of features at a time.
    labelled = (
        p
        | "PreviouslyLabelled" >> beam.Create(list(previous_clip_files))
        | "ReadPreviousClips" >> ReadAllFromParquet(columns=["clip_id", "source_version", "model_sha256"])
        | "SameModel" >> beam.Filter(lambda r, sha: r["model_sha256"] == sha and r["source_version"],
                                     checkpoint.weights_sha256)
        | "ByClipId" >> beam.Map(lambda r: (r["clip_id"], r["source_version"])))
    clips = (
        discovered.sources
        | "SpreadOverWorkers" >> beam.Reshuffle()
        | "ReadSources" >> beam.ParDo(ReadSources(storage_options), labelled=beam.pvalue.AsDict(labelled))
        .with_outputs("errors", main="clips"))
    featurized = (
        clips.clips
        | "DecodeAndFbank" >> beam.ParDo(DecodeAndFeaturize(
            checkpoint.features, storage_options=storage_options,
            max_duration_seconds=opts.max_duration_seconds, hop_seconds=opts.hop_seconds,
            progress_seconds=opts.progress_seconds)
        ).with_outputs(OUTCOMES, main="windows"))
    handler = MindSporeASTModelHandler(checkpoint.uri, backend=opts.backend,
                                       batch_size=opts.batch_size, device=opts.device,
                                       storage_options=storage_options, precision=opts.precision,
                                       model_copies=opts.model_copies, placement_key=run_id)
    scored = (
        featurized.windows
        | "Infer" >> RunInference(handler)
        | "Score" >> beam.ParDo(ScoreWindows(
            opts.activation, keep_embeddings=bool(opts.emit_embeddings),
            progress_seconds=opts.progress_seconds)).with_outputs(FAILURES, main="scores"))
    assembled = (
        {OUTCOME: featurized[OUTCOMES], SCORES: scored.scores, FAILURES: scored[FAILURES]}
        | "GroupWindowsByClip" >> beam.CoGroupByKey()
        | "AssembleClips" >> beam.ParDo(AssembleClips(
            selection, opts.activation, opts.aggregate, checkpoint.model_id, checkpoint.weights_sha256,
            run_id, emit_scores=opts.emit_scores, embedding_dtype=opts.emit_embeddings)
        ).with_outputs("segments", "errors", main="clips"))
    errors = (
        (discovered.errors, clips.errors, assembled.errors)
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> beam.ParDo(ErrorsToRows(run_id)))
    # Workers started by an external worker pool get no pipeline options: the sinks carry the
    # filesystem settings they need (see transforms/write_tables.py).
    settings = filesystem_settings(opts)
    assembled.clips | "WriteClips" >> WriteTable(
        table_prefix(opts.output, run_id, "clips"),
        with_optional_outputs(CLIPS_SCHEMA, opts.emit_scores, opts.emit_embeddings),
        settings, file_name_suffix=".parquet")
    assembled.segments | "WriteSegments" >> WriteTable(
        table_prefix(opts.output, run_id, "segments"),
        with_optional_outputs(SEGMENTS_SCHEMA, opts.emit_scores, opts.emit_embeddings),
        settings, file_name_suffix=".parquet")
    errors | "WriteErrors" >> WriteTable(
        table_prefix(opts.output, run_id, "errors"), ERRORS_SCHEMA, settings,
        file_name_suffix=".parquet")
