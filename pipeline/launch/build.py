"""Assemble the labelling pipeline.

    discover (files, globs, manifests) -> Reshuffle -> read sources (tar shards streamed)
      -> decode + window + fbank (streaming) -> RunInference -> window scores
      -> CoGroupByKey(clip id) -> clips + segments rows, or an error row -> Parquet
      + tallies of every stage -> one _stats/summary.json (the run's accounting, as data)

Windows of all files flow through RunInference together, so its batches mix
windows of different files. Only scores (never features) are grouped per clip.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from schemas.tables import CLIPS_SCHEMA, ERRORS_SCHEMA, SEGMENTS_SCHEMA, SHARD_STATS_SCHEMA
from transforms.io.checkpoint import CheckpointInfo
from transforms.io.incremental import CLIPS_ROW_GROUP_BYTES
from transforms.discover import DiscoverSources
from transforms.elements import DiscoveryRequest
from transforms.featurize import OUTCOMES, DecodeAndFeaturize
from transforms.label_rows import FAILURES, OUTCOME, SCORES, AssembleClips, ErrorsToRows, ScoreWindows
from transforms.scoring.fingerprint import run_fingerprint
from transforms.scoring.labels import LabelSelection
from transforms.mindspore_inference import MindSporeASTModelHandler
from transforms.io.url_secrets import scrub_url
from transforms.read_sources import SHARDS, JoinPrevious, ReadPreviousRuns, ReadSources
from transforms.progress import ProgressSettings
from transforms.run_stats import DISCOVERED, SOURCES, TALLY, RunStats, count_as
from pipeline.runs.layout import Attempt
from transforms.io.storage import parse_storage_options
from transforms.write_tables import WriteTable, filesystem_settings


def build_pipeline(p: beam.Pipeline, opts, checkpoint: CheckpointInfo, attempt: Attempt,
                   selection: LabelSelection, storage_options: dict | None = None,
                   previous_clip_files: tuple[str, ...] = (),
                   previous_shard_files: tuple[str, ...] = (), fingerprint: str | None = None) -> None:
    """``attempt``: where this launch's job writes (pipeline/runs/layout.py); published later.
    ``storage_options``: fsspec options without credentials (see pipeline/launch/storage_settings.py).
    ``fingerprint``: the run's labelling fingerprint (transforms/scoring/fingerprint.py), written
    on every row; worked out from ``opts`` when not given.
    ``previous_clip_files``/``previous_shard_files``: clips tables and shard statistics of
    finished earlier runs (--skip_labelled); their clips, labelled the same way
    (transforms/io/incremental.py labelling_key), are skipped, and so are whole shards all of
    whose members were."""
    run_id = attempt.run_id
    if storage_options is None:
        storage_options = parse_storage_options(getattr(opts, "storage_options", None))
    if fingerprint is None:
        fingerprint, _ = run_fingerprint(opts, checkpoint, selection)
    # Each worker's running counts go to the attempt's _progress folder, for the launcher's line.
    progress = ProgressSettings(opts.progress_seconds, attempt.progress_dir, storage_options)
    request = DiscoveryRequest(inputs=tuple(opts.input or ()),
                               manifests=tuple(getattr(opts, "input_manifest", None) or ()))
    discovered = (
        p
        | "Inputs" >> beam.Create([request])
        | "Discover" >> beam.ParDo(DiscoverSources(storage_options, progress)).with_outputs(
            "errors", TALLY, main="sources"))
    # Discovery runs on one worker; the reshuffle spreads files and shards over workers. Reading,
    # decoding, inference and scoring are then fused: each window goes on to batching as soon as
    # it is cut, so a worker holds about one batch of features at a time.
    sources = discovered.sources | "SpreadOverWorkers" >> beam.Reshuffle()
    if opts.skip_labelled:
        sources = _join_previous(p, sources, previous_clip_files, previous_shard_files, storage_options,
                                 fingerprint)
    clips = (
        sources
        | "ReadSources" >> beam.ParDo(ReadSources(storage_options, fingerprint, opts.max_sample_bytes, progress))
        .with_outputs("errors", TALLY, SHARDS, main="clips"))
    featurized = (
        clips.clips
        | "DecodeAndFbank" >> beam.ParDo(DecodeAndFeaturize(
            checkpoint.features, storage_options=storage_options,
            max_duration_seconds=opts.max_duration_seconds, hop_seconds=opts.hop_seconds,
            progress=progress)
        ).with_outputs(OUTCOMES, main="windows"))
    handler = MindSporeASTModelHandler(checkpoint.uri, backend=opts.backend,
                                       batch_size=opts.batch_size, device=opts.device,
                                       storage_options=storage_options, precision=opts.precision,
                                       model_copies=opts.model_copies,
                                       checkpoint_sha256=checkpoint.file_sha256)
    scored = (
        featurized.windows
        | "Infer" >> RunInference(handler)
        | "Score" >> beam.ParDo(ScoreWindows(
            opts.activation, keep_embeddings=bool(opts.emit_embeddings),
            progress=progress)).with_outputs(FAILURES, TALLY, main="scores"))
    assembled = (
        {OUTCOME: featurized[OUTCOMES], SCORES: scored.scores, FAILURES: scored[FAILURES]}
        | "GroupWindowsByClip" >> beam.CoGroupByKey()
        | "AssembleClips" >> beam.ParDo(AssembleClips(
            selection, opts.activation, opts.aggregate, checkpoint.model_id, checkpoint.weights_sha256,
            run_id, emit_scores=opts.emit_scores, emit_embeddings=bool(opts.emit_embeddings),
            labelling_fingerprint=fingerprint, progress=progress)
        ).with_outputs("segments", "errors", main="clips"))
    errors = (
        (discovered.errors, clips.errors, assembled.errors)
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> beam.ParDo(ErrorsToRows(run_id, fingerprint)))
    # Workers started by an external worker pool get no pipeline options: the sinks carry the
    # filesystem settings they need (see transforms/write_tables.py).
    settings = filesystem_settings(opts)
    assembled.clips | "WriteClips" >> WriteTable(
        attempt.table_prefix("clips"),
        CLIPS_SCHEMA, settings, file_name_suffix=".parquet", row_group_buffer_size=CLIPS_ROW_GROUP_BYTES)
    assembled.segments | "WriteSegments" >> WriteTable(
        attempt.table_prefix("segments"), SEGMENTS_SCHEMA, settings,
        file_name_suffix=".parquet")
    errors | "WriteErrors" >> WriteTable(
        attempt.table_prefix("errors"), ERRORS_SCHEMA, settings,
        file_name_suffix=".parquet")
    # The run's accounting and summary, as data (exact on every runner, retries included).
    clips[SHARDS] | "WriteShardStats" >> WriteTable(
        attempt.shard_stats_prefix, SHARD_STATS_SCHEMA, settings,
        file_name_suffix=".parquet")
    tallies = (
        (discovered[TALLY], clips[TALLY], scored[TALLY],
         discovered.errors | "DiscoveryErrorTallies" >> count_as(DISCOVERED),
         discovered.sources | "SourceTallies" >> count_as(SOURCES))
        | "StageTallies" >> beam.Flatten())
    ({"tallies": tallies, "clips": assembled.clips, "segments": assembled.segments, "errors": errors}
     | "RunStats" >> RunStats(attempt.summary_stats_path, settings))


def _join_previous(p: beam.Pipeline, sources, clip_files: tuple[str, ...],
                   shard_files: tuple[str, ...], storage_options: dict, fingerprint: str):
    """SourceRefs -> (SourceRef, PreviousLabelling): a keyed join on the source URI against the
    earlier runs' clips rows and shard records, so each worker holds the history of the sources
    it reads, never the whole archive's (as a side input would, on every worker)."""
    def history(name: str, files: tuple[str, ...]):
        return (p
                | f"Previous{name}Files" >> beam.Create(list(files))
                | f"Spread{name}Files" >> beam.Reshuffle()
                | f"ReadPrevious{name}" >> beam.ParDo(ReadPreviousRuns(name.lower(), storage_options, fingerprint)))

    return (
        {"source": sources | "BySourceUri" >> beam.Map(lambda s: (scrub_url(s.uri), s)),
         "labelled": history("Clips", clip_files), "shards": history("Shards", shard_files)}
        | "JoinPreviousRuns" >> beam.CoGroupByKey()
        | "WithPrevious" >> beam.ParDo(JoinPrevious(fingerprint)))
