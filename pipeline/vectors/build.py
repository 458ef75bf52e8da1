"""Build the index of an output root: one partition per published run, each published
all-or-nothing (files first, its manifest last). Beam-free.

A partition whose manifest names the run's published attempt is up to date and is left alone, so
a nightly run adds its own partition without the others being rebuilt; a rerun of a run id
publishes a new attempt, which makes that partition stale, and the next build replaces it. All
partitions share one embedding fingerprint (weights, config, feature settings, window and hop:
transforms/scoring/fingerprint.py embedding_fingerprint), recorded in ``_INDEX.json``; a run made
with another is refused, never mixed in.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import shutil
import tempfile
from importlib import metadata

import numpy as np
import pyarrow as pa

from pipeline.runs import store
from pipeline.runs.layout import new_attempt_id
from pipeline.runs.publish import read_json_document, write_json_document
from pipeline.vectors.layout import (ANN_FILE, BUILD_FILES, archive_doc_path, build_dir, level_dir,
                                     partition_dir, partition_manifest_path)
from pipeline.vectors.partition import (DEFAULT_EXACT_MAX, PartitionWriter, build_ann, default_nprobe, ivf_cells)
from pipeline.vectors.runs import (CLIP_COLUMNS, SEGMENT_COLUMNS, PublishedRun, embedding_matrix, filesystem,
                                   iter_batches, normalised, published_runs, row_count)
from schemas.tables import LABEL_SCORE, list_of
from transforms.io.machine_cache import cache_subdir

_LOG = logging.getLogger(__name__)

ROWS_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string()),
    pa.field("source_uri", pa.string()),
    pa.field("window_index", pa.int32()),     # null in a clips-level index
    pa.field("start_seconds", pa.float64()),
    pa.field("end_seconds", pa.float64()),
    pa.field("labels", list_of(LABEL_SCORE)),
    pa.field("run_id", pa.string()),
    pa.field("clip_row", pa.int32()),         # the clip's row in clips.arrow
])
CLIPS_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string()),
    pa.field("source_uri", pa.string()),
    pa.field("shard_uri", pa.string()),
    pa.field("member_name", pa.string()),
    pa.field("duration_seconds", pa.float64()),
    pa.field("labelled_at", pa.timestamp("us", tz="UTC")),
    pa.field("run_id", pa.string()),
])


class IndexBuildError(ValueError):
    """The index cannot be built as asked (mixed fingerprints, no embeddings, ...)."""


class MixedFingerprintsError(IndexBuildError):
    pass


@dataclasses.dataclass
class BuildReport:
    built: list[str] = dataclasses.field(default_factory=list)        # run ids indexed now
    up_to_date: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # run id -> why
    vectors: dict[str, int] = dataclasses.field(default_factory=dict)
    kinds: dict[str, str] = dataclasses.field(default_factory=dict)

    def render(self) -> str:
        lines = [f"indexed {len(self.built)} run(s), {len(self.up_to_date)} up to date, "
                 f"{len(self.skipped)} skipped"]
        lines += [f"  {r}: {self.vectors[r]} vectors ({self.kinds[r]})" for r in self.built]
        lines += [f"  {r}: skipped: {why}" for r, why in sorted(self.skipped.items())]
        return "\n".join(lines)


def _describe_fingerprints(by_fp: dict[str, list[str]]) -> str:
    return "; ".join(f"{fp[:12]}: {', '.join(sorted(runs)[:5])}{' ...' if len(runs) > 5 else ''}"
                     for fp, runs in sorted(by_fp.items()))


def check_one_fingerprint(candidates: list[PublishedRun], existing: dict | None) -> str:
    """The embedding fingerprint every candidate run shares with the index; raises
    MixedFingerprintsError (naming the runs of each) when they differ."""
    by_fp: dict[str, list[str]] = {}
    for run in candidates:
        by_fp.setdefault(run.embedding_fingerprint, []).append(run.run_id)
    if existing is not None:
        others = {fp: runs for fp, runs in by_fp.items() if fp != existing["embedding_fingerprint"]}
        if others:
            raise MixedFingerprintsError(
                f"the index holds embeddings of fingerprint {existing['embedding_fingerprint'][:12]} "
                f"(model {existing.get('model', {}).get('model_id')}); run(s) made with another "
                f"(different weights, config, features, window or hop) cannot join it: "
                f"{_describe_fingerprints(others)}. Choose runs with --runs, or remove "
                "the index folder and build it anew for the other model")
    elif len(by_fp) > 1:
        raise MixedFingerprintsError(
            "the runs under this output root were made with different embedding fingerprints "
            f"(weights, config, features, window or hop): {_describe_fingerprints(by_fp)}; "
            "embeddings of different models are not comparable: choose one set with --runs")
    return existing["embedding_fingerprint"] if existing else next(iter(by_fp))


def build_index(output: str, level: str = "segments", storage_options: dict | None = None,
                runs: list[str] | None = None, exact_max: int = DEFAULT_EXACT_MAX,
                threads: int | None = None) -> BuildReport:
    report = BuildReport()
    try:
        chosen = published_runs(output, storage_options, runs)
    except ValueError as e:
        raise IndexBuildError(str(e)) from None
    candidates = []
    for run in chosen:
        if not run.has_embeddings:
            report.skipped[run.run_id] = "labelled without --emit_embeddings (no embeddings to index)"
        elif run.embedding_fingerprint is None:
            report.skipped[run.run_id] = "its manifest records no fingerprint inputs (written by an older version)"
        else:
            candidates.append(run)
    if not chosen:
        raise IndexBuildError(f"no published run under {output}")
    if not candidates:   # every run skipped: the report says why
        return report
    existing = read_json_document(archive_doc_path(output, level), storage_options)
    fingerprint = check_one_fingerprint(candidates, existing)
    if existing is None:
        first = candidates[0]
        _makedirs(level_dir(output, level), storage_options)
        write_json_document(archive_doc_path(output, level), {
            "level": level, "embedding_fingerprint": fingerprint, "embedding_inputs": first.embedding_inputs,
            "model": {k: first.model.get(k) for k in ("uri", "model_id", "weights_sha256")},
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}, storage_options)
    for run in candidates:
        published = read_json_document(partition_manifest_path(output, level, run.run_id), storage_options)
        if published and published.get("run_attempt") == run.attempt and published.get("exact_max") == exact_max:
            report.up_to_date.append(run.run_id)
            continue
        manifest = build_partition(output, level, run, fingerprint, storage_options, exact_max, threads)
        report.built.append(run.run_id)
        report.vectors[run.run_id] = manifest["vectors"]
        report.kinds[run.run_id] = manifest["kind"]
    return report


def _clip_rows(batch: pa.RecordBatch, clip_rows: dict[str, int], run_id: str) -> pa.Array:
    try:
        return pa.array([clip_rows[c] for c in batch.column("clip_id").to_pylist()], pa.int32())
    except KeyError as e:
        raise IndexBuildError(f"run {run_id}: segments rows of clip {e.args[0]} that its clips table lacks") from None


def _segment_batches(run: PublishedRun, storage_options, clip_rows: dict[str, int]):
    files = run.files("segments", storage_options)
    for batch in iter_batches(files, SEGMENT_COLUMNS + ["embedding"], storage_options):
        rows = pa.RecordBatch.from_arrays([batch.column(c) for c in SEGMENT_COLUMNS]
                                          + [_clip_rows(batch, clip_rows, run.run_id)], schema=ROWS_SCHEMA)
        yield rows, embedding_matrix(batch.column("embedding"), f"run {run.run_id} segments")


def _clip_level_batches(run: PublishedRun, storage_options, clip_rows: dict[str, int]):
    files = run.files("clips", storage_options)
    for batch in iter_batches(files, ["clip_id", "source_uri", "duration_seconds", "labels", "run_id",
                                      "embedding"], storage_options):
        n = len(batch)
        rows = pa.RecordBatch.from_arrays([
            batch.column("clip_id"), batch.column("source_uri"), pa.nulls(n, pa.int32()),
            pa.array(np.zeros(n)), batch.column("duration_seconds").cast(pa.float64()),
            batch.column("labels"), batch.column("run_id"), _clip_rows(batch, clip_rows, run.run_id)],
            schema=ROWS_SCHEMA)
        yield rows, embedding_matrix(batch.column("embedding"), f"run {run.run_id} clips")


def build_partition(output: str, level: str, run: PublishedRun, fingerprint: str,
                    storage_options: dict | None = None, exact_max: int = DEFAULT_EXACT_MAX,
                    threads: int | None = None) -> dict:
    """Build one run's partition in a local folder, upload it, then publish its manifest."""
    table = "segments" if level == "segments" else "clips"
    build_id = new_attempt_id()
    work = tempfile.mkdtemp(prefix=f"index-{run.run_id}-", dir=cache_subdir("index-builds"))
    try:
        num_rows = row_count(run.files(table, storage_options), storage_options)
        # The clips first: each row points at its clip's row (a dict of this run's clip ids only).
        clip_rows = _write_clips(work, run, storage_options)
        writer = PartitionWriter(work, num_rows, ROWS_SCHEMA)
        batches = _segment_batches(run, storage_options, clip_rows) if level == "segments" else \
            _clip_level_batches(run, storage_options, clip_rows)
        for rows, vectors in batches:
            if len(rows):
                writer.add(rows, normalised(vectors))
        vectors = writer.finish()
        kind, nlist = "exact", None
        if len(vectors) > exact_max:
            nlist = ivf_cells(len(vectors))
            ann = build_ann(vectors, nlist, threads=threads)
            import faiss

            faiss.write_index(ann, os.path.join(work, ANN_FILE))
            del ann
            kind = "ivf_sq8"
        manifest = {
            "run_id": run.run_id, "run_attempt": run.attempt, "level": level, "build": build_id,
            "embedding_fingerprint": fingerprint, "vectors": int(len(vectors)), "dim": int(vectors.shape[1]),
            "kind": kind, "nlist": nlist, "nprobe": default_nprobe(nlist) if nlist else None,
            "exact_max": exact_max, "metric": "cosine",
            "files": list(BUILD_FILES) + ([ANN_FILE] if kind != "exact" else []),
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "versions": _versions(),
        }
        del vectors
        _upload(work, build_dir(output, level, run.run_id, build_id), manifest["files"], storage_options)
        write_json_document(partition_manifest_path(output, level, run.run_id), manifest, storage_options)
        _retire_other_builds(output, level, run.run_id, build_id, storage_options)
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_clips(work: str, run: PublishedRun, storage_options) -> dict[str, int]:
    """The run's clips (id, where the audio is, labelled_at): the current-labels rule and the
    search results' audio need them. Streamed to an Arrow IPC file; returns clip id -> row."""
    import pyarrow.ipc as ipc

    from pipeline.vectors.layout import CLIPS_FILE

    positions: dict[str, int] = {}
    with pa.OSFile(os.path.join(work, CLIPS_FILE), "wb") as sink, ipc.new_file(sink, CLIPS_SCHEMA) as writer:
        for batch in iter_batches(run.files("clips", storage_options), CLIP_COLUMNS, storage_options):
            for clip_id in batch.column("clip_id").to_pylist():
                if clip_id in positions:
                    raise IndexBuildError(f"run {run.run_id}: clip {clip_id} twice in its clips table")
                positions[clip_id] = len(positions)
            writer.write_batch(pa.RecordBatch.from_arrays(
                [batch.column(c).cast(CLIPS_SCHEMA.field(c).type) for c in CLIP_COLUMNS], schema=CLIPS_SCHEMA))
    return positions


def _makedirs(url: str, storage_options) -> None:
    fs, path = filesystem(url, storage_options)
    fs.makedirs(path, exist_ok=True)


def _upload(work: str, target: str, names: list[str], storage_options) -> None:
    fs, root = filesystem(target, storage_options)
    fs.makedirs(root, exist_ok=True)
    for name in names:
        fs.put_file(os.path.join(work, name), f"{root.rstrip('/')}/{name}")


def _retire_other_builds(output: str, level: str, run_id: str, keep: str, storage_options) -> None:
    """After the swap: earlier builds of the partition (and failed ones) go."""
    fs, root = filesystem(partition_dir(output, level, run_id), storage_options)
    for name, info in sorted(store.children(fs, root).items()):
        if not name.startswith("_") and name != keep:
            try:
                if info.get("type") == "directory":
                    store.remove_tree(fs, info["name"])
                else:
                    store.remove_file(fs, info["name"])
            except Exception as e:   # published all the same; the next build retries
                _LOG.error("index partition %s: could not remove earlier build %s: %s", run_id, info["name"], e)


def _versions() -> dict:
    found = {}
    for name in ("faiss-cpu", "pyarrow", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
