"""Launch a labelling run: validate options, build, run, check the accounting, summarise."""
from __future__ import annotations

import dataclasses
import datetime
import logging
import secrets
import sys
import time

from transforms.model.runtime_env import ensure_protobuf_python_backend

ensure_protobuf_python_backend()

from pipeline.console.logs import LEVELS, configure_logging, worker_log_args  # noqa: E402

import apache_beam as beam  # noqa: E402
from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

from pipeline.launch.options import (  # noqa: E402
    LabelAudioOptions, help_parser, take_launcher_flags, unknown_options)
from pipeline.launch.storage_settings import StorageSettings, without_url_credentials  # noqa: E402
from pipeline.launch.worker_reach import check_worker_reach, runner_name  # noqa: E402
from pipeline.runs.error_budget import ErrorFractionExceeded, check_error_fraction  # noqa: E402
from pipeline.console.failure_report import FailedRun, where  # noqa: E402
from pipeline.console.live_progress import JobProgress, ProgressDisplay, run_watched  # noqa: E402
from pipeline.runs import killpoint  # noqa: E402
from pipeline.runs.layout import Attempt, InvalidRunId, check_run_id, manifest_path  # noqa: E402
from pipeline.runs.lease import LeaseHeldError, RunLease  # noqa: E402
from pipeline.runs.publish import (  # noqa: E402
    check_writable, finished_clip_files, finished_shard_stats_files, output_uris, package_versions, promote,
    read_manifest, redact, retire_other_attempts, unpromote, write_json_document, write_manifest)
from pipeline.runs.reconcile import reconcile  # noqa: E402
from pipeline.runs.summary import AccountingError, NothingDiscoveredError, RunSummary  # noqa: E402
from transforms.io.checkpoint import CheckpointError  # noqa: E402
from transforms.io.hub_models import inspect_model  # noqa: E402
from transforms.progress import reset_process_progress  # noqa: E402
from transforms.io.storage import StorageOptionsError, scrub_urls_in_logs  # noqa: E402
from transforms.io.url_secrets import scrub_recorded, scrub_text  # noqa: E402
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
        raise UsageError("--model is required (an AST checkpoint directory or a Hugging Face model id)")
    if opts.device == "cpu" and opts.precision != "fp32":
        raise UsageError(f"--precision {opts.precision} needs --device gpu or ascend (or auto); CPU runs fp32")
    if opts.emit_embeddings == "float16":
        raise UsageError("--emit_embeddings float16 is no longer offered: Spark cannot read Parquet's "
                         "FLOAT16 type; embeddings are stored as float32 (--emit_embeddings)")
    if opts.emit_embeddings not in (None, "float32"):
        raise UsageError(f"--emit_embeddings {opts.emit_embeddings}: embeddings are stored as float32; "
                         "give --emit_embeddings alone (or --emit_embeddings float32)")
    for flag, value in (("--batch_size", opts.batch_size), ("--top_k", opts.top_k),
                        ("--model_copies", opts.model_copies)):
        if value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    if opts.threshold is not None and not 0.0 <= opts.threshold <= 1.0:
        raise UsageError(f"--threshold {opts.threshold:g}: must be a number in [0, 1] (a label's score "
                         "after the activation)")
    for flag, value in (("--hop_seconds", opts.hop_seconds),
                        ("--max_duration_seconds", opts.max_duration_seconds)):
        if value is not None and not value > 0:
            raise UsageError(f"{flag} {value:g}: must be more than 0 seconds")
    if opts.progress_seconds < 0:
        raise UsageError(f"--progress_seconds {opts.progress_seconds:g}: must be 0 or more")
    if not 0.0 <= opts.max_error_fraction <= 1.0:
        raise UsageError(f"--max_error_fraction must be between 0 and 1 (1.0 disables the check), "
                         f"got {opts.max_error_fraction:g}")
    if opts.run_id is not None:
        try:
            check_run_id(opts.run_id)
        except InvalidRunId as e:
            raise UsageError(str(e)) from e
    if opts.max_sample_bytes < 1:
        raise UsageError(f"--max_sample_bytes must be at least 1, got {opts.max_sample_bytes}")
    if opts.backend == "mindnlp":
        from transforms.model.ast_mindnlp import INSTALL_HINT, missing_packages

        missing = missing_packages()
        if missing:
            raise UsageError(f"--backend mindnlp needs the optional MindNLP packages ({', '.join(missing)} "
                             f"not installed): {INSTALL_HINT}")


# Runners this job refuses at launch, and why (docs/usage.md, "Runners").
UNSUPPORTED_RUNNERS = {
    "DaskRunner": "Beam 2.77's DaskRunner mixes the elements of tagged outputs, runs only the last "
                  "sink of a pipeline and reports no metrics, so a run would lose or misfile rows; use "
                  "the DirectRunner, the PortableRunner, Flink, Spark or Dataflow",
}


def refuse_unsupported_runner(options: PipelineOptions) -> None:
    given = runner_name(options).rsplit(".", 1)[-1].lower()
    for name, why in UNSUPPORTED_RUNNERS.items():
        # Beam takes the name in any case, with or without the "Runner" suffix ("dask").
        if given in (name.lower(), name.lower().removesuffix("runner")):
            raise UsageError(f"--runner {name} is not supported: {why}")


def _open_iceberg_catalog(opts):
    """The --iceberg_catalog, opened at launch so a misconfigured catalog fails before any work."""
    from pipeline.lakehouse.iceberg_commit import IcebergSetupError, open_catalog

    try:
        return open_catalog(opts.iceberg_catalog, opts.output)
    except ImportError as e:
        raise UsageError(f"--iceberg_catalog needs pyiceberg: pip install '.[iceberg]' ({e})") from e
    except IcebergSetupError as e:
        raise UsageError(str(e)) from e
    except ValueError as e:   # pyiceberg's word on an incomplete configuration
        raise UsageError(f"--iceberg_catalog {opts.iceberg_catalog}: {e}") from e


def run_job(p: beam.Pipeline, on_started=None):
    """Run the pipeline to the end; the launcher's one PipelineResult. ``on_started(result)``:
    called as soon as the runner returned a result (the job may still run: its metrics feed the
    progress line). (A seam: tests wrap the result to see the launcher on runners that report
    fewer metrics.)"""
    result = p.run()
    if on_started is not None:
        on_started(result)
    result.wait_until_finish()
    return result


def print_help() -> None:
    help_parser().print_help()


def run(argv: list[str] | None = None, result_view=None) -> RunSummary:
    """``result_view``: a seam for tests, applied to Beam's PipelineResult before the launcher
    uses it (e.g. to hide its metrics, as Flink's and Spark's job servers do). The launcher
    needs nothing from the result but its end: the accounting is data the pipeline wrote."""
    argv = list(argv or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        # Beam's default would try to download the Prism runner first; local runs need none.
        argv.append("--runner=DirectRunner")
    dry_run, argv = take_launcher_flags(argv)
    try:
        # Credentials leave the pipeline options here (Beam's workers log their options).
        storage, argv = StorageSettings.from_argv(argv)
    except StorageOptionsError as e:
        raise UsageError(str(e)) from e
    # SDK workers log as the launcher does (pipeline/console/logs.py).
    argv += worker_log_args(console_settings(argv), argv)
    problems = unknown_options(argv)
    if problems:
        raise UsageError("; ".join(problems) + " (run_pipeline.py --help lists ours; Beam's own "
                         "pipeline options pass through)")
    # ``opts`` keeps the real URLs: the graph is built from it, so the DoFns that open them get
    # their credentials. Beam's own copy of the options, which its workers log and runners show,
    # gets them scrubbed of user-info and credential query parameters.
    options = PipelineOptions(without_url_credentials(argv))
    opts = PipelineOptions(argv).view_as(LabelAudioOptions)
    refuse_unsupported_runner(options)
    validate(opts)
    unreachable = check_worker_reach(options, opts, storage.secret_flags)
    if unreachable:
        raise UsageError(unreachable)
    with storage.environment():
        try:
            check_writable(opts.output, storage.fsspec_options())
        except PermissionError as e:
            raise UsageError(str(e)) from e
        try:
            checkpoint = inspect_model(opts.model, storage.fsspec_options())
        except (CheckpointError, OSError) as e:
            raise UsageError(_naming("--model", opts.model, e)) from e
        catalog = _open_iceberg_catalog(opts) if opts.iceberg_catalog else None
        try:
            WindowGeometry.for_features(checkpoint.features, opts.hop_seconds)
        except ValueError as e:
            raise UsageError(_naming("--hop_seconds", f"{opts.hop_seconds:g}", e)) from e
        selection = _label_selection(opts, checkpoint)
        if dry_run:
            from pipeline.launch.dry_run import survey_inputs

            return survey_inputs(opts, storage.fsspec_options(), checkpoint)
        run_id = opts.run_id or new_run_id()
        attempt = Attempt.new(opts.output, run_id)
        try:
            lease = RunLease(opts.output, run_id, attempt.attempt_id, storage.fsspec_options())
            lease.acquire()
        except (LeaseHeldError, ValueError) as e:   # ValueError: a bad AUDIO_LABELLING_LEASE_SECONDS
            raise UsageError(str(e)) from e
        try:
            _reconcile_output(opts, catalog, storage, attempt, lease)
            return _run_attempt(options, opts, checkpoint, selection, catalog, storage, attempt, lease,
                                result_view)
        finally:
            lease.release()


def _naming(flag: str, value, error: BaseException) -> str:
    """A launch error's message that names the option and its value (once)."""
    text = str(error) or type(error).__name__
    return f"{flag}: {text}" if str(value) in text else f"{flag} {value}: {text}"


def _label_selection(opts, checkpoint):
    """--label_map, --class_thresholds, --threshold and --top_k, read and checked; a problem is
    reported against the option it comes from (each file is read on its own first)."""
    from transforms.scoring.labels import LabelSelection

    steps = (("--label_map", opts.label_map, dict(label_map_path=opts.label_map)),
             ("--class_thresholds", opts.class_thresholds,
              dict(label_map_path=opts.label_map, class_thresholds_path=opts.class_thresholds)))
    for flag, value, files in steps:
        if value:
            try:
                LabelSelection.load(checkpoint.labels, opts.top_k, None, **files)
            except (ValueError, OSError) as e:
                raise UsageError(_naming(flag, value, e)) from e
    try:
        return LabelSelection.load(checkpoint.labels, opts.top_k, opts.threshold,
                                   opts.class_thresholds, opts.label_map)
    except (ValueError, OSError) as e:
        raise UsageError(f"--threshold {opts.threshold}, --top_k {opts.top_k}: {e}") from e


def _reconcile_output(opts, catalog, storage, attempt: Attempt, lease: RunLease) -> None:
    """Before this attempt's job: repair what earlier launchers into the output root left
    (pipeline/runs/reconcile.py). A run id it cannot repair now (its lease is live, the store
    refuses) is logged and left for the next launch; this run goes on either way."""
    alignment = None
    if catalog is not None:
        from pipeline.lakehouse.iceberg_align import IcebergAlignment

        alignment = IcebergAlignment(catalog, opts.iceberg_namespace, opts.output, storage.fsspec_options())
    try:
        report = reconcile(opts.output, storage.fsspec_options(), iceberg=alignment,
                           held={attempt.run_id: lease}, keep_attempts={attempt.attempt_id})
    except Exception as e:
        _LOG.error("reconciling %s failed (%s: %s); the next launch retries", opts.output, type(e).__name__, e)
        return
    if report.done or report.skipped or report.failed or report.missing:
        _LOG.warning("reconciled the output root:\n%s", scrub_text(report.render()))


def _publish(opts, catalog, so, attempt: Attempt, lease: RunLease, manifest: dict, counts: dict,
             clock: "StageClock") -> None:
    """Steps 1-4 of pipeline/runs/publish.py, the lease checked before each. Until the manifest
    is swapped, any failure (a lost lease included) undoes what this attempt did: its Iceberg
    commits are rolled back (only where nobody committed since), then its files moved back. A
    kill leaves the same to reconciliation."""
    run_id = attempt.run_id
    lease.check()
    killpoint.reached("before-promote")
    files = promote(attempt, so)
    manifest.update(attempt=attempt.attempt_id, files=files,
                    stats=attempt.stats_dir[len(opts.output.rstrip("/")) + 1:])
    committed: dict[str, list[str]] = {}
    try:
        if catalog is not None:
            from pipeline.lakehouse.iceberg_commit import publish_run

            # Before the first commit: the tables may point at the promoted files from now on,
            # which a reconciliation without this catalog must then leave where they are.
            write_json_document(attempt.iceberg_marker_path, {"catalog": opts.iceberg_catalog,
                                                               "namespace": opts.iceberg_namespace}, so)
            # Before the manifest: a run whose Iceberg commit failed is not published either.
            uris = {t: output_uris(opts.output, files[t], so) for t in files}
            relative = {u: p for t in files for u, p in zip(uris[t], files[t])}
            snapshots = publish_run(catalog, opts.iceberg_namespace, run_id, uris, counts, so,
                                    committed=committed, check=lease.check)
            manifest["iceberg"] = {"catalog": opts.iceberg_catalog, "namespace": opts.iceberg_namespace,
                                   "snapshots": snapshots,
                                   "files": {t: [relative[u] for u in us] for t, us in committed.items()}}
        lease.check()
        killpoint.reached("before-manifest")
        clock.lap("publish")
        # Where the run's time went, by the launcher's clock (the report's throughput chart).
        manifest["timings"]["stages"] = clock.stages
        write_manifest(opts.output, run_id, manifest, so)
    except BaseException:
        _withdraw(opts, catalog, so, attempt, files, committed)
        raise


def _withdraw(opts, catalog, so, attempt: Attempt, files: dict, committed: dict) -> None:
    """Undo an unpublished attempt's commits and moves (best effort; reconciliation finishes)."""
    if committed:
        from pipeline.lakehouse.iceberg_commit import withdraw_run

        try:
            previous = read_manifest(opts.output, attempt.run_id, so) or {}
            record = previous.get("iceberg") or {}
            if isinstance(record.get("files"), dict):
                restore = {t: output_uris(opts.output, ps, so) for t, ps in record["files"].items()}
            else:
                from pipeline.lakehouse.iceberg_commit import files_with_rows

                restore = {t: files_with_rows(output_uris(opts.output, ps, so), so)
                           for t, ps in (previous.get("files") or {}).items()}
            withdraw_run(catalog, opts.iceberg_namespace, attempt.run_id, committed, restore,
                         previous.get("counts"))
        except Exception as e:
            # The tables still name the moved files: leave them where they are, so every table
            # still scans; the next reconciliation rolls the tables back, then moves them.
            _LOG.error("run %s: rolling back the Iceberg commits failed (%s: %s); the files stay in the "
                       "table folders until the next launch reconciles the output root", attempt.run_id,
                       type(e).__name__, e)
            return
    unpromote(attempt, files, so)


def _run_attempt(options, opts, checkpoint, selection, catalog, storage, attempt: Attempt,
                 lease: RunLease, result_view) -> RunSummary:
    """One attempt of a run id, under its lease: run the job into the attempt's own folder, check
    it, then publish (pipeline/runs/publish.py). Whatever raises before the manifest is written leaves
    the run id's earlier publication as it was."""
    from pipeline.launch.build import build_pipeline
    from transforms.scoring.fingerprint import run_fingerprint

    run_id, so = attempt.run_id, storage.fsspec_options()
    started = datetime.datetime.now(datetime.timezone.utc)
    # This run id's own earlier publication is not a source: this attempt replaces it.
    # Only file names here: the workers read the earlier rows, joined per source.
    previous, previous_shards = ((finished_clip_files(opts.skip_labelled, run_id, so),
                                  finished_shard_stats_files(opts.skip_labelled, run_id, so))
                                 if opts.skip_labelled else ([], []))
    reset_process_progress()
    clock = StageClock()
    p = beam.Pipeline(options=options)
    # Everything that changes a row, hashed once: on every row, in the manifest, and what
    # --skip_labelled matches earlier rows on.
    fingerprint, fingerprint_inputs = run_fingerprint(opts, checkpoint, selection)
    build_pipeline(p, opts, checkpoint, attempt, selection, storage.public, tuple(previous),
                   tuple(previous_shards), fingerprint=fingerprint)
    progress = JobProgress(attempt.progress_dir, so)
    display = ProgressDisplay(progress, opts.progress_seconds, enabled=not opts.quiet)
    clock.lap("prepare")
    try:
        result = run_watched(lambda on_started: run_job(p, on_started), display)
    except Exception as e:
        _LOG.error("run %s: the job failed (%s: %s); nothing published; its attempt folder: %s",
                   run_id, type(e).__name__, e, where(attempt.root))
        raise
    finally:
        progress.clear()
    if result_view is not None:
        result = result_view(result)
    clock.lap("job")
    summary = RunSummary.read(attempt, so)
    summary.read_scope = storage.environment
    summary.incremental = bool(opts.skip_labelled)
    try:
        summary.check_accounting()
        if not opts.allow_empty:
            summary.check_not_empty()
        if summary.sources:
            # A run that found no audio at all is --allow_empty's to judge (its only rows are
            # patterns that matched nothing), not the error budget's.
            check_error_fraction(summary.counts(), opts.max_error_fraction)
    except (AccountingError, NothingDiscoveredError, ErrorFractionExceeded) as e:
        e.failed_run = FailedRun(summary)   # what main() prints below the message
        raise
    finished = datetime.datetime.now(datetime.timezone.utc)
    summary.seconds = (finished - started).total_seconds()
    manifest = build_manifest(opts, checkpoint, summary, started, finished, storage.public)
    manifest.update(labelling_fingerprint=fingerprint, fingerprint_inputs=fingerprint_inputs)
    clock.lap("accounting")
    _publish(opts, catalog, so, attempt, lease, manifest, summary.counts(), clock)
    summary.published = True
    _LOG.info("run %s published: %d clips, %d errors, %d segments rows (manifest %s)", run_id,
              summary.labelled, summary.errored, summary.segment_rows, where(manifest_path(opts.output, run_id)))
    try:
        retire_other_attempts(opts.output, run_id, manifest, so, check=lease.check)
    except Exception as e:   # published all the same; the next reconciliation retries
        _LOG.error("run %s: published, but removing earlier attempts failed (%s: %s)", run_id,
                   type(e).__name__, e)
    return summary


class StageClock:
    """Seconds each stage of an attempt took, lap by lap (the manifest's ``timings.stages``)."""

    def __init__(self):
        self._last = time.monotonic()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self.stages[stage] = round(now - self._last, 3)
        self._last = now


def build_manifest(opts, checkpoint, summary: RunSummary, started, finished,
                   storage_options: dict | None = None) -> dict:
    """What a finished run publishes about itself. Credentials never enter it: storage options
    arrive without them (StorageSettings.public) and are redacted again as a second guard, and
    every string in it (inputs, the model's URI, the paths of settings such as --skip_labelled,
    --class_thresholds, --label_map) has URL user-info and credential query parameters removed."""
    seconds = (finished - started).total_seconds()
    return scrub_recorded({
        "run_id": summary.run_id,
        "inputs": list(opts.input or []),
        "input_manifests": list(getattr(opts, "input_manifest", None) or []),
        "storage_options": redact(storage_options or {}),
        "counts": summary.counts(),
        "files_passed_over": summary.files_passed_over,   # not inputs: what scans left out, by kind
        "model": {"uri": checkpoint.uri, "model_id": checkpoint.model_id,
                  "weights_sha256": checkpoint.weights_sha256, "num_labels": len(checkpoint.labels),
                  "backend": opts.backend, "device": opts.device, "precision": opts.precision,
                  **({"hub": checkpoint.hub} if checkpoint.hub else {})},
        "features": dataclasses.asdict(checkpoint.features),
        "settings": {"batch_size": opts.batch_size, "top_k": opts.top_k,
                     "activation": opts.activation, "max_duration_seconds": opts.max_duration_seconds,
                     "hop_seconds": opts.hop_seconds, "aggregate": opts.aggregate,
                     "threshold": opts.threshold, "class_thresholds": opts.class_thresholds,
                     "label_map": opts.label_map, "emit_scores": opts.emit_scores,
                     "emit_embeddings": opts.emit_embeddings, "skip_labelled": opts.skip_labelled,
                     "max_error_fraction": opts.max_error_fraction,
                     "max_sample_bytes": opts.max_sample_bytes, "allow_empty": opts.allow_empty},
        "versions": package_versions(),
        "timings": {"started": started.isoformat(), "finished": finished.isoformat(),
                    "seconds": seconds,
                    "clips_per_second": summary.labelled / seconds if seconds > 0 else None,
                    "audio_seconds_per_second": summary.audio_seconds / seconds if seconds > 0 else None,
                    "windows_per_second": summary.windows_scored / seconds if seconds > 0 else None},
        "figures": summary.figures(),
        "tables": {"clips": summary.labelled, "errors": summary.errored,
                   "segments": summary.segment_rows},
    })


def console_settings(argv: list[str]) -> str:
    """The log level asked for (--log_level, -q/--quiet), read before anything else runs so that
    logging is in place first; an unknown level is left to the option parsing to report."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--log_level", type=str.upper, default="INFO")
    parser.add_argument("-q", "--quiet", action="store_true")
    known, _ = parser.parse_known_args(argv)
    if known.quiet:
        return "WARNING"
    return known.log_level if known.log_level in LEVELS else "INFO"


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:]
    configure_logging(console_settings(argv))
    scrub_urls_in_logs()
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    try:
        outcome = run(argv)
    except UsageError as e:
        print(f"error: {scrub_text(str(e))}", file=sys.stderr)
        return 2
    except (ErrorFractionExceeded, NothingDiscoveredError, AccountingError, LeaseHeldError) as e:
        failed = getattr(e, "failed_run", None)
        print(scrub_text(failed.render(str(e)) if failed else f"error: {e}"), file=sys.stderr)
        return 1
    print(outcome.render())
    return 0
