"""Assemble the labelling pipeline:
discover -> reshuffle -> read sources (shards streamed) -> decode + fbank -> RunInference -> rows -> Parquet."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from schemas.tables import CLIPS_SCHEMA, ERRORS_SCHEMA
from transforms.checkpoint import CheckpointInfo
from transforms.discover import DiscoverSources
from transforms.elements import DiscoveryRequest
from transforms.featurize import DecodeAndFeaturize
from transforms.label_rows import ErrorsToRows, PredictionsToRows
from transforms.mindspore_inference import MindSporeASTModelHandler
from transforms.read_sources import ReadSources
from transforms.storage import parse_storage_options


def table_prefix(output: str, run_id: str, table: str) -> str:
    return f"{output.rstrip('/')}/{run_id}/{table}/part"


def build_pipeline(p: beam.Pipeline, opts, checkpoint: CheckpointInfo, run_id: str,
                   storage_options: dict | None = None) -> None:
    """``storage_options``: fsspec options without credentials (see pipeline/storage_settings.py)."""
    if storage_options is None:
        storage_options = parse_storage_options(getattr(opts, "storage_options", None))
    request = DiscoveryRequest(inputs=tuple(opts.input or ()),
                               manifests=tuple(getattr(opts, "input_manifest", None) or ()))
    discovered = (
        p
        | "Inputs" >> beam.Create([request])
        | "Discover" >> beam.ParDo(DiscoverSources(storage_options)).with_outputs("errors", main="sources"))
    # Discovery runs on one worker; the reshuffle spreads files and shards over workers, and
    # each shard's members then flow, fused, through decoding in the worker that reads it.
    clips = (
        discovered.sources
        | "SpreadOverWorkers" >> beam.Reshuffle()
        | "ReadSources" >> beam.ParDo(ReadSources(storage_options)).with_outputs("errors", main="clips"))
    featurized = (
        clips.clips
        | "DecodeAndFbank" >> beam.ParDo(DecodeAndFeaturize(
            checkpoint.features, storage_options=storage_options,
            max_duration_seconds=opts.max_duration_seconds)
        ).with_outputs("errors", main="windows"))
    handler = MindSporeASTModelHandler(checkpoint.uri, backend=opts.backend,
                                       batch_size=opts.batch_size, device=opts.device,
                                       storage_options=storage_options)
    scored = (
        featurized.windows
        | "Infer" >> RunInference(handler)
        | "ToRows" >> beam.ParDo(PredictionsToRows(
            checkpoint.labels, opts.activation, opts.top_k, checkpoint.model_id,
            checkpoint.weights_sha256, run_id)).with_outputs("errors", main="clips"))
    errors = (
        (discovered.errors, clips.errors, featurized.errors, scored.errors)
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> beam.ParDo(ErrorsToRows(run_id)))
    scored.clips | "WriteClips" >> beam.io.WriteToParquet(
        table_prefix(opts.output, run_id, "clips"), CLIPS_SCHEMA, file_name_suffix=".parquet")
    errors | "WriteErrors" >> beam.io.WriteToParquet(
        table_prefix(opts.output, run_id, "errors"), ERRORS_SCHEMA, file_name_suffix=".parquet")
