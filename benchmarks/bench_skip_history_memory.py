"""--skip_labelled over a growing history: per-worker memory must stay flat in the history's size.

    python benchmarks/bench_skip_history_memory.py [--sizes 1000,10000,100000] [--workers 2]

For each size N it writes, as an earlier *finished* run under one output root, a clips table of
N clip ids (members of 1000-member shards; rows built with the project's own schema and row
builder, transforms/scoring/rows.py clip_row) with its per-shard statistics and a manifest -
generating N rows by really labelling N clips would take hours here. The current input is two
small shards: one the history says was labelled in full at its current version (skipped unread),
one new (read and labelled). The whole pipeline then runs with --skip_labelled on the DirectRunner
in multi_processing mode (--direct_num_workers workers, each a separate SDK worker process) in a
fresh launcher process. The history is read by the workers (ReadPreviousRuns) and joined to
the sources by key (CoGroupByKey), so no worker holds it all; Beam's DirectRunner does that
shuffle in the launcher's (the runner's) process, as a cluster runner does in its shuffle service.

Printed per size: the most history entries any one source brought to its worker (a Beam
distribution metric of the join, read through main.run's result seam), the workers' peak RSS (ru_maxrss of the launcher's reaped children, the
largest one) and the launcher/runner process's own peak RSS, and the run's counts. Exit status
1 when the workers' peak at the largest size exceeds the smallest size's by more than --limit_mb.

The fake history is written as the pipeline's WriteClips writes a clips table (row groups cut at
CLIPS_ROW_GROUP_BYTES of Arrow data, uncompressed), in files of FILE_ROWS rows like a run's shards.

Measured 2026-11-30 (2 loaded cores, --workers 2; `python benchmarks/bench_skip_history_memory.py`):
the history any source brought to its worker stayed at 3 entries for 1 000, 10 000 and 100 000
history rows; workers' peak RSS 823.3 / 828.1 / 856.6 MB (+33.3 MB at 100 000, within the 50 MB
limit); launcher 446.9 / 454.5 / 507.8 MB. Before this change (one 50 000-row group per file,
threaded 4096-row reads, the weights' digest sent with every entry): 825.9 -> 911.8 MB (+86).

Where the remaining growth comes from (traced with VmHWM at ReadPreviousRuns/JoinPrevious, not
kept in the code): no worker holds the history as a structure, but each worker relays its part of
it through Beam's data plane. The worker reading history files encodes every entry it emits into
Beam's output buffer (flushed to the runner at 10 MB, then copied into gRPC messages); each worker
running the join receives its share of the grouped history (here ~50 000 entries each, all of
sources not in this run) while it sets up its DoFns. Both peaks grow with the bytes relayed
(~61 encoded bytes per entry now, 129 before). Beam's buffers have fixed sizes (10 MB flush
threshold, 5-message receive queue, 100 MB send queues in apache_beam/runners/worker/data_plane.py,
not ours to change), so the growth should stop once a worker's share exceeds them; that plateau
is NOT measured here (nothing beyond 100 000 rows). With Beam's flush threshold patched to 1 MB
(experiment only, after the row-group change, before the digest was dropped) the reading worker's
peak rose by ~30 MB over its 100 000 entries instead of ~65 MB. So the figure is not flat at
these sizes; it grows with the bytes relayed, not with a copy of the history held.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", PYTHONPATH=ROOT)

_LAUNCH = r"""
import json, resource, sys
from transforms.model.runtime_env import ensure_protobuf_python_backend
ensure_protobuf_python_backend()
from apache_beam.metrics.metric import MetricsFilter
from pipeline.main import run
results = []
summary = run(sys.argv[1:], result_view=lambda r: results.append(r) or r)
found = results[0].metrics().query(MetricsFilter().with_name("history_entries_per_source"))["distributions"]
held = [d.attempted for d in found if d.attempted]
print(json.dumps({"counts": summary.counts(), "shards_skipped": summary.shards_skipped,
                  "shards_read": summary.shards_read,
                  "history_entries_max_per_source": max((d.max for d in held), default=0),
                  "history_entries_joined_to_sources": sum(d.sum for d in held),
                  "launcher_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "workers_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}))
"""


# Rows per clips file of the fake history: a real run writes several shards, each a few
# row groups (FILE_ROWS rows here make one file's row groups as the pipeline would cut them).
FILE_ROWS = 50000


def write_like_pipeline(rows: list[dict], path: str) -> None:
    """A clips file as the pipeline's WriteClips writes it: Beam's WriteToParquet cuts a row group
    each time its buffered 1000-row record batches reach row_group_buffer_size
    (CLIPS_ROW_GROUP_BYTES), uncompressed (its default codec)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from schemas.tables import CLIPS_SCHEMA
    from transforms.io.incremental import CLIPS_ROW_GROUP_BYTES

    table = pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA)
    with pq.ParquetWriter(path, CLIPS_SCHEMA, compression="none") as writer:
        buffered, size = [], 0
        for record_batch in table.to_batches(max_chunksize=1000):
            if size >= CLIPS_ROW_GROUP_BYTES:
                writer.write_table(pa.Table.from_batches(buffered, schema=CLIPS_SCHEMA))
                buffered, size = [], 0
            buffered.append(record_batch)
            size += record_batch.nbytes
        if buffered:
            writer.write_table(pa.Table.from_batches(buffered, schema=CLIPS_SCHEMA))


def write_history(out: str, size: int, model_sha256: str, fingerprint: str, current_shard: str,
                  members: list[str]) -> None:
    """A finished earlier run 'history' under ``out`` labelling ``size`` archive clips, plus every
    member of ``current_shard`` at its current version."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.runs.publish import write_manifest
    from pipeline.runs.layout import Attempt, published_table_dir
    from schemas.tables import SHARD_STATS_SCHEMA
    from transforms.elements import ClipInfo
    from transforms.io.storage import Storage
    from transforms.scoring.rows import clip_row

    labels = [{"label": f"label {i}", "index": i, "score": 0.5 - i / 100} for i in range(5)]
    current_version = Storage().version(current_shard)
    # Laid out as a published run: clips in the table folder, shard records in its attempt folder.
    attempt = Attempt(out, "history", "a0")
    clips_dir = published_table_dir(out, "history", "clips")
    os.makedirs(clips_dir)
    os.makedirs(attempt.shard_stats_dir)

    def row(shard: str, member: str, version: str) -> dict:
        clip_id = f"{shard}#{member}"
        info = ClipInfo(clip_id=clip_id, source_uri=clip_id, duration_seconds=10.0, original_sample_rate=16000,
                        channels=1, shard_uri=shard, member_name=member, source_version=version)
        return clip_row(info, labels, "sigmoid", "tiny", model_sha256, "history", num_windows=1, aggregation="max",
                        labelling_fingerprint=fingerprint)

    shard_rows, part, batch = [], 0, []
    for i in range(size):
        shard = f"s3://archive/shards/old-{i // 1000:05d}.tar"
        if i % 1000 == 0:
            shard_rows.append({"shard_uri": shard, "source_version": "etag:old", "audio_members": 1000,
                               "complete": True})
        batch.append(row(shard, f"{i % 1000:06d}.wav", "etag:old"))
        if len(batch) == FILE_ROWS:
            write_like_pipeline(batch, f"{clips_dir}/part-{part:05d}.parquet")
            part, batch = part + 1, []
    batch += [row(current_shard, m, current_version) for m in members]
    write_like_pipeline(batch, f"{clips_dir}/part-{part:05d}.parquet")
    shard_rows.append({"shard_uri": current_shard, "source_version": current_version,
                       "audio_members": len(members), "complete": True})
    pq.write_table(pa.Table.from_pylist(shard_rows, schema=SHARD_STATS_SCHEMA),
                   f"{attempt.shard_stats_dir}/part-00000.parquet")
    files = sorted(f"clips/run_id=history/{name}" for name in os.listdir(clips_dir))
    write_manifest(out, "history", {"run_id": "history", "note": "written by the benchmark",
                                    "attempt": attempt.attempt_id, "files": {"clips": files}})


def history_labelling(model: str) -> tuple[str, str]:
    """(weights SHA-256, labelling fingerprint) of a run of ``model`` with default settings, as
    the launcher works them out: the history must look labelled the way tonight's run labels."""
    from transforms.model.runtime_env import ensure_protobuf_python_backend

    ensure_protobuf_python_backend()
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.launch.options import LabelAudioOptions
    from transforms.io.checkpoint import inspect_checkpoint
    from transforms.scoring.fingerprint import run_fingerprint
    from transforms.scoring.labels import LabelSelection

    info = inspect_checkpoint(model)
    opts = PipelineOptions(["--model", model]).view_as(LabelAudioOptions)
    selection = LabelSelection.load(info.labels, opts.top_k, opts.threshold, opts.class_thresholds, opts.label_map)
    return info.weights_sha256, run_fingerprint(opts, info, selection)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit_mb", type=float, default=50.0)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from pipeline.demo.audio import tone
    from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint
    from tests.shard_corpus import audio_bytes, make_tar

    work = tempfile.mkdtemp(prefix="bench_history_")
    report = {"workers": args.workers, "sizes": {}}
    try:
        model = write_checkpoint(os.path.join(work, "model"), TinyASTSpec(max_length=32, num_mel_bins=32), seed=0)
        sha, fingerprint = history_labelling(model)
        audio = os.path.join(work, "audio")
        os.makedirs(audio)
        members = [f"{i:03d}.wav" for i in range(3)]
        shards = [os.path.join(audio, f"cur-{k}.tar") for k in range(2)]
        for k, shard in enumerate(shards):
            with open(shard, "wb") as f:
                f.write(make_tar([(m, audio_bytes("wav", tone(0.3, 16000, 300.0 + 100 * i + 50 * k), 16000))
                                  for i, m in enumerate(members)]))
        for size in (int(s) for s in args.sizes.split(",")):
            out = os.path.join(work, f"labels_{size}")
            write_history(out, size, sha, fingerprint, shards[0], members)
            proc = subprocess.run(
                [sys.executable, "-c", _LAUNCH, "--input", audio, "--model", model, "--output", out,
                 "--skip_labelled", out, "--run_id", "tonight", "--direct_running_mode", "multi_processing",
                 "--direct_num_workers", str(args.workers), "--progress_seconds", "600"],
                cwd=ROOT, env=ENV, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"run with history {size} failed:\n{proc.stderr[-3000:]}")
            report["sizes"][size] = json.loads(proc.stdout.strip().splitlines()[-1])
            shutil.rmtree(out)
        peaks = [v["workers_peak_rss_mb"] for v in report["sizes"].values()]
        report["workers_peak_growth_mb"] = round(peaks[-1] - peaks[0], 1)
        report["limit_mb"] = args.limit_mb
        report["within_limit"] = report["workers_peak_growth_mb"] <= args.limit_mb
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0 if report["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
