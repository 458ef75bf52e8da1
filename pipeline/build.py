"""Assemble the labelling pipeline: discover -> decode + fbank -> RunInference -> rows -> Parquet."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from schemas.tables import CLIPS_SCHEMA, ERRORS_SCHEMA
from transforms.checkpoint import CheckpointInfo
from transforms.discover import ExpandInputs
from transforms.featurize import DecodeAndFeaturize
from transforms.label_rows import ErrorsToRows, PredictionsToRows
from transforms.mindspore_inference import MindSporeASTModelHandler


def table_prefix(output: str, run_id: str, table: str) -> str:
    return f"{output.rstrip('/')}/{run_id}/{table}/part"


def build_pipeline(p: beam.Pipeline, opts, checkpoint: CheckpointInfo, run_id: str) -> None:
    discovered = (
        p
        | "Inputs" >> beam.Create(opts.input)
        | "Discover" >> beam.ParDo(ExpandInputs()).with_outputs("errors", main="uris"))
    # Discovery runs on one worker; the reshuffle lets decoding and inference fan out.
    featurized = (
        discovered.uris
        | "SpreadOverWorkers" >> beam.Reshuffle()
        | "DecodeAndFbank" >> beam.ParDo(DecodeAndFeaturize(
            checkpoint.features, max_duration_seconds=opts.max_duration_seconds)
        ).with_outputs("errors", main="windows"))
    handler = MindSporeASTModelHandler(checkpoint.uri, backend=opts.backend,
                                       batch_size=opts.batch_size, device=opts.device)
    scored = (
        featurized.windows
        | "Infer" >> RunInference(handler)
        | "ToRows" >> beam.ParDo(PredictionsToRows(
            checkpoint.labels, opts.activation, opts.top_k, checkpoint.model_id,
            checkpoint.weights_sha256, run_id)).with_outputs("errors", main="clips"))
    errors = (
        (discovered.errors, featurized.errors, scored.errors)
        | "AllErrors" >> beam.Flatten()
        | "ErrorRows" >> beam.ParDo(ErrorsToRows(run_id)))
    scored.clips | "WriteClips" >> beam.io.WriteToParquet(
        table_prefix(opts.output, run_id, "clips"), CLIPS_SCHEMA, file_name_suffix=".parquet")
    errors | "WriteErrors" >> beam.io.WriteToParquet(
        table_prefix(opts.output, run_id, "errors"), ERRORS_SCHEMA, file_name_suffix=".parquet")
