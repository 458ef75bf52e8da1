"""Launch a labelling run: validate options, build, run, check the accounting, summarise."""
from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
import sys

from transforms.model.runtime_env import ensure_protobuf_python_backend

ensure_protobuf_python_backend()

import apache_beam as beam  # noqa: E402
from apache_beam.metrics.metric import MetricsFilter  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipeline.options import LabelAudioOptions  # noqa: E402
from pipeline.publish import (  # noqa: E402
    begin_run, check_writable, finished_clip_files, package_versions, redact, write_manifest)
from pipeline.storage_settings import StorageSettings  # noqa: E402
from pipeline.summary import RunSummary, read_run_tables  # noqa: E402
from pipeline.worker_reach import check_worker_reach  # noqa: E402
from transforms.io.checkpoint import CheckpointError, inspect_checkpoint  # noqa: E402
from transforms.progress import reset_process_progress  # noqa: E402
from transforms.read_sources import WORKERS_NAMESPACE  # noqa: E402
from transforms.io.storage import StorageOptionsError  # noqa: E402
from transforms.audio.windowing import WindowGeometry  # noqa: E402

_LOG = logging.getLogger("audio_labelling")


class UsageError(Exception):
    pass


def new_run_id() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


def validate(opts: LabelAudioOptions) -> None:
    if not opts.input and not opts.input_manifest:
        raise UsageError("--input or --input_manifest is required (a file, directory, glob or URL; "
                         "a list of URIs)")
    if not opts.output:
        raise UsageError("--output is required (a directory or URL)")
    if not opts.model:
        raise UsageError("--model is required (an AST checkpoint directory)")
    if opts.device == "cpu" and opts.precision != "fp32":
        raise UsageError(f"--precision {opts.precision} needs --device gpu or ascend (or auto); CPU runs fp32")
    if opts.batch_size < 1 or opts.top_k < 1:
        raise UsageError("--batch_size and --top_k must be at least 1")


def _counter(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed or 0 for c in found) if found else 0


def _distribution_count(result, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_name(name))["distributions"]
    return sum(d.committed.count for d in found if d.committed) if found else 0


def _shards_by_worker(result) -> dict[int, int]:
    found = result.metrics().query(MetricsFilter().with_namespace(WORKERS_NAMESPACE))["counters"]
    spread: dict[int, int] = {}
    for c in found:
        pid = int(c.key.metric.name.rsplit("_", 1)[1])
        spread[pid] = spread.get(pid, 0) + (c.committed or 0)
    return spread


def run_job(p: beam.Pipeline):
    """Run the pipeline to the end; the launcher's one PipelineResult. (A seam: tests wrap the
    result to see the launcher on runners that report fewer metrics.)"""
    result = p.run()
    result.wait_until_finish()
    return result


def print_help() -> None:
    import argparse

    parser = argparse.ArgumentParser(
        prog="run_pipeline.py", description="Label audio with an AST model into Parquet tables.",
        epilog="Apache Beam's pipeline options (--runner, --direct_num_workers, "
               "--direct_running_mode, --setup_file, ...) are accepted too.")
    LabelAudioOptions._add_argparse_args(parser)
    parser.print_help()


def run(argv: list[str] | None = None) -> RunSummary:
    argv = list(argv or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        # Beam's default would try to download the Prism runner first; local runs need none.
        argv.append("--runner=DirectRunner")
    try:
        # Credentials leave the pipeline options here (Beam's workers log their options).
        storage, argv = StorageSettings.from_argv(argv)
    except StorageOptionsError as e:
        raise UsageError(str(e)) from e
    options = PipelineOptions(argv)
    opts = options.view_as(LabelAudioOptions)
    validate(opts)
    unreachable = check_worker_reach(options, opts, storage.secret_flags)
    if unreachable:
        raise UsageError(unreachable)
    with storage.environment():
        try:
            check_writable(opts.output, storage.fsspec_options())
            checkpoint = inspect_checkpoint(opts.model, storage.fsspec_options())
        except (CheckpointError, PermissionError) as e:
            raise UsageError(str(e)) from e
        try:
            WindowGeometry.for_features(checkpoint.features, opts.hop_seconds)
        except ValueError as e:
            raise UsageError(f"--hop_seconds: {e}") from e
        from transforms.scoring.labels import LabelSelection

        try:
            selection = LabelSelection.load(checkpoint.labels, opts.top_k, opts.threshold,
                                            opts.class_thresholds, opts.label_map)
        except (ValueError, OSError) as e:
            raise UsageError(str(e)) from e
        run_id = opts.run_id or new_run_id()
        from pipeline.build import build_pipeline

        started = datetime.datetime.now(datetime.timezone.utc)
        # Listed before begin_run clears this run id: an earlier attempt of it is not a source.
        previous = (finished_clip_files(opts.skip_labelled, run_id, storage.fsspec_options())
                    if opts.skip_labelled else [])
        begin_run(opts.output, run_id, storage.fsspec_options())
        reset_process_progress()
        p = beam.Pipeline(options=options)
        build_pipeline(p, opts, checkpoint, run_id, selection, storage.public, tuple(previous))
        result = run_job(p)
        clips, errors, segments = read_run_tables(opts.output, run_id, storage.fsspec_options())
        summary = RunSummary(run_id=run_id, output=opts.output,
                             discovered=_counter(result, "inputs_discovered"),
                             skipped=_counter(result, "clips_skipped"),
                             clips=clips, errors=errors, segments=segments,
                             windows_scored=_counter(result, "windows_scored"),
                             inference_batches=_distribution_count(result, "inference_request_batch_size"),
                             shards_read=_counter(result, "shards_read"),
                             members_ignored=_counter(result, "shard_members_ignored"),
                             shards_by_worker=_shards_by_worker(result))
        summary.check_accounting()
        finished = datetime.datetime.now(datetime.timezone.utc)
        summary.seconds = (finished - started).total_seconds()
        write_manifest(opts.output, run_id,
                       build_manifest(opts, checkpoint, summary, started, finished, storage.public),
                       storage.fsspec_options())
    return summary


def build_manifest(opts, checkpoint, summary: RunSummary, started, finished,
                   storage_options: dict | None = None) -> dict:
    """What a finished run publishes about itself. Credentials never enter it: storage options
    arrive without them (StorageSettings.public) and are redacted again as a second guard."""
    seconds = (finished - started).total_seconds()
    return {
        "run_id": summary.run_id,
        "inputs": list(opts.input or []),
        "input_manifests": list(getattr(opts, "input_manifest", None) or []),
        "storage_options": redact(storage_options or {}),
        "counts": summary.counts(),
        "model": {"uri": checkpoint.uri, "model_id": checkpoint.model_id,
                  "weights_sha256": checkpoint.weights_sha256, "num_labels": len(checkpoint.labels),
                  "backend": opts.backend, "device": opts.device, "precision": opts.precision},
        "features": dataclasses.asdict(checkpoint.features),
        "settings": {"batch_size": opts.batch_size, "top_k": opts.top_k,
                     "activation": opts.activation, "max_duration_seconds": opts.max_duration_seconds,
                     "hop_seconds": opts.hop_seconds, "aggregate": opts.aggregate,
                     "threshold": opts.threshold, "class_thresholds": opts.class_thresholds,
                     "label_map": opts.label_map, "emit_scores": opts.emit_scores,
                     "emit_embeddings": opts.emit_embeddings, "skip_labelled": opts.skip_labelled},
        "versions": package_versions(),
        "timings": {"started": started.isoformat(), "finished": finished.isoformat(),
                    "seconds": seconds,
                    "clips_per_second": summary.clips.num_rows / seconds if seconds > 0 else None},
        "tables": {"clips": summary.clips.num_rows, "errors": summary.errors.num_rows,
                   "segments": summary.segments.num_rows if summary.segments is not None else 0},
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = argv if argv is not None else sys.argv[1:]
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    try:
        summary = run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary.render())
    return 0
