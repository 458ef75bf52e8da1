"""The published runs an index is built from, as their manifests describe them, and their
embeddings read back in batches (memory bounded by the batch, not by the run). Beam-free."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.runs.layout import RUN_ID_RULE, is_run_id
from pipeline.runs.publish import finished_runs, published_files, read_manifest
from transforms.io.storage import options_for_protocol, protocol_of
from transforms.scoring.embeddings import embedding_matrix  # noqa: F401  (re-exported: pipeline/vectors/build.py)
from transforms.scoring.fingerprint import embedding_fingerprint

BATCH_ROWS = 8192
# What the index keeps of each row besides its vector (see pipeline/vectors/layout.py).
SEGMENT_COLUMNS = ["clip_id", "source_uri", "window_index", "start_seconds", "end_seconds", "labels", "run_id"]
CLIP_COLUMNS = ["clip_id", "source_uri", "shard_uri", "member_name", "duration_seconds", "labelled_at", "run_id"]


def run_id_list(text: str) -> list[str]:
    """``--runs a,b``: the run ids named, each checked (an argparse ``type``: a bad one is a
    usage error naming it; empty parts are ignored)."""
    named = [run_id for run_id in text.split(",") if run_id]
    for run_id in named:
        if not is_run_id(run_id):
            raise argparse.ArgumentTypeError(f"{run_id!r} is not a run id: {RUN_ID_RULE}")
    return named


def filesystem(url: str, storage_options: dict | None = None):
    """(fs, path) for a URL, with the storage options of its protocol."""
    return fsspec.core.url_to_fs(url, **options_for_protocol(storage_options or {}, protocol_of(url)))


@dataclasses.dataclass(frozen=True)
class PublishedRun:
    """One run id as its _MANIFEST.json says it was published."""
    output: str
    run_id: str
    manifest: dict

    @property
    def attempt(self) -> str:
        return self.manifest["attempt"]

    @property
    def has_embeddings(self) -> bool:
        return bool((self.manifest.get("settings") or {}).get("emit_embeddings"))

    @property
    def embedding_fingerprint(self) -> str | None:
        """None for a run whose manifest records no fingerprint inputs (written before them)."""
        inputs = self.manifest.get("fingerprint_inputs")
        try:
            return embedding_fingerprint(inputs) if inputs else None
        except KeyError:
            return None

    @property
    def embedding_inputs(self) -> dict:
        from transforms.scoring.fingerprint import EMBEDDING_INPUT_KEYS

        inputs = self.manifest.get("fingerprint_inputs") or {}
        return {k: inputs.get(k) for k in EMBEDDING_INPUT_KEYS}

    @property
    def model(self) -> dict:
        return dict(self.manifest.get("model") or {})

    def files(self, table: str, storage_options: dict | None = None) -> list[str]:
        return published_files(self.output, self.run_id, table, storage_options, self.manifest)


def published_runs(output: str, storage_options: dict | None = None,
                   only: list[str] | None = None) -> list[PublishedRun]:
    """Every run under ``output`` that holds a manifest, by run id; with ``only``, just those
    run ids (ValueError naming any that is not published there)."""
    runs = []
    for run_id in finished_runs(output, storage_options):
        manifest = read_manifest(output, run_id, storage_options)
        if manifest is not None:
            runs.append(PublishedRun(output, run_id, manifest))
    if only:
        missing = sorted(set(only) - {r.run_id for r in runs})
        if missing:
            raise ValueError(f"no published run {', '.join(missing)} under {output}")
        runs = [r for r in runs if r.run_id in set(only)]
    return runs


def row_count(files: list[str], storage_options: dict | None = None) -> int:
    """Rows in Parquet files, from their footers only."""
    total = 0
    for url in files:
        fs, path = filesystem(url, storage_options)
        with fs.open(path, "rb") as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def iter_batches(files: list[str], columns: list[str], storage_options: dict | None = None,
                 batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    for url in files:
        fs, path = filesystem(url, storage_options)
        with fs.open(path, "rb") as f:
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns)


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): cosine similarity is then a dot product."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
