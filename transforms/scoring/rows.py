"""Build table rows (dicts matching schemas/tables.py) from pipeline values.

Every URI and message goes through scrub_url/scrub_text on its way into a row: the pipeline
reads presigned URLs as given, but their signatures and tokens are never recorded."""
from __future__ import annotations

import datetime

from transforms.elements import ClipInfo, InputError, WindowScores
from transforms.io.url_secrets import scrub_text, scrub_url


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def clip_row(clip: ClipInfo, labels: list[dict], activation: str, model_id: str,
             model_sha256: str, run_id: str, num_windows: int, aggregation: str,
             silent: bool = False, labelling_fingerprint: str | None = None) -> dict:
    return {
        "clip_id": scrub_url(clip.clip_id),
        "source_uri": scrub_url(clip.source_uri),
        "shard_uri": scrub_url(clip.shard_uri),
        "member_name": clip.member_name,
        "meta": clip.meta,
        "source_version": clip.source_version,
        "duration_seconds": clip.duration_seconds,
        "declared_duration_seconds": clip.declared_duration_seconds,
        "truncated": clip.truncated,
        "original_sample_rate": clip.original_sample_rate,
        "channels": clip.channels,
        "labels": labels,
        "num_windows": num_windows,
        "aggregation": aggregation,
        "silent": silent,
        "activation": activation,
        "model_id": model_id,
        "model_sha256": model_sha256,
        "labelling_fingerprint": labelling_fingerprint,
        "run_id": run_id,
        "labelled_at": utc_now(),
    }


def segment_row(clip: ClipInfo, window: WindowScores, labels: list[dict], run_id: str,
                labelling_fingerprint: str | None = None) -> dict:
    return {
        "clip_id": scrub_url(clip.clip_id),
        "source_uri": scrub_url(clip.source_uri),
        "window_index": window.window_index,
        "start_seconds": window.start_seconds,
        "end_seconds": window.end_seconds,
        "labels": labels,
        "labelling_fingerprint": labelling_fingerprint,
        "run_id": run_id,
    }


def error_row(error: InputError, run_id: str, labelling_fingerprint: str | None = None) -> dict:
    return {
        "source_uri": scrub_url(error.source_uri),
        "clip_id": scrub_url(error.clip_id),
        "shard_uri": scrub_url(error.shard_uri),
        "member_name": error.member_name,
        "stage": error.stage,
        "error_type": error.error_type,
        "message": scrub_text(error.message),
        "labelling_fingerprint": labelling_fingerprint,
        "run_id": run_id,
        "recorded_at": utc_now(),
    }
