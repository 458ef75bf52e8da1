"""Apply a custom classifier to every window of an output root's published runs: one Beam job
over the stored embeddings (no model runs), then, per scored run, the accounting check and an
all-or-nothing publication of its custom_labels partition (pipeline/classes/layout.py) with the
runs' own machinery (pipeline/runs/publish.py).

A partition whose manifest names the scored run's published attempt is up to date and is not
scored again; a rerun of the run id makes it stale. Runs made with another embedding fingerprint
than the classifier's are not scored (the report says so), nor runs without embeddings.

Accounting, per run, from data the job wrote (``_stats/summary.json``) and the Parquet footers:
the windows scored equal the run's segments rows and the clips its clips rows (its manifest's
counts), and the committed rows equal windows x labels. Any difference fails the apply and
nothing of that run is published. The positive count is the job's own tally: the launcher reads
no table data.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.classes.layout import ApplyAttempt, manifest_path, meta_dir
from pipeline.runs.publish import (attempt_files, output_uris, package_versions, promote, read_json_document,
                                   retire_other_attempts, unpromote, write_json_document)
from pipeline.runs.summary import AccountingError, parquet_rows, read_run_stats
from pipeline.vectors.runs import PublishedRun, filesystem, published_runs
from schemas.custom_labels import CUSTOM_LABELS_SCHEMA
from transforms.custom_labels import (CLIPS, POSITIVE, ROWS, WINDOWS, ReadParquetRows, ScoreClipWindows,
                                      ScoreSegmentFile, SumTallies)
from transforms.scoring.custom_classes import LinearClassifier
from transforms.write_tables import WriteTable, carrying_filesystem_settings, filesystem_settings

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class ApplyReport:
    classifier_id: str
    published: dict[str, dict] = dataclasses.field(default_factory=dict)   # run id -> counts
    up_to_date: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def render(self) -> str:
        lines = [f"classifier {self.classifier_id}: scored {len(self.published)} run(s), "
                 f"{len(self.up_to_date)} up to date, {len(self.skipped)} skipped"]
        lines += [f"  {r}: {c['windows']} windows -> {c['rows']} custom_labels rows ({c['positive']} positive)"
                  for r, c in sorted(self.published.items())]
        lines += [f"  {r}: skipped: {why}" for r, why in sorted(self.skipped.items())]
        return "\n".join(lines)


def pending_runs(output: str, classifier: LinearClassifier, storage_options: dict | None,
                 runs: list[str] | None, report: ApplyReport) -> list[PublishedRun]:
    chosen = published_runs(output, storage_options, runs)
    pending = []
    for run in chosen:
        if not run.has_embeddings:
            report.skipped[run.run_id] = "labelled without --emit_embeddings"
        elif run.embedding_fingerprint != classifier.embedding_fingerprint:
            report.skipped[run.run_id] = (f"embedding fingerprint {str(run.embedding_fingerprint)[:12]} is not "
                                          f"the classifier's {classifier.embedding_fingerprint[:12]}")
        else:
            published = read_json_document(manifest_path(output, report.classifier_id, run.run_id), storage_options)
            if published and published.get("run_attempt") == run.attempt:
                report.up_to_date.append(run.run_id)
            else:
                pending.append(run)
    return pending


def build_apply_pipeline(p: beam.Pipeline, classifier: LinearClassifier, runs: list[PublishedRun],
                         attempts: dict[str, ApplyAttempt], storage_options: dict, settings: dict) -> None:
    """One branch per run: its segments files (scored as read) and clips files -> join by clip ->
    rows -> the attempt's folder."""
    doc = classifier.to_json()
    for run in runs:
        attempt, tag = attempts[run.run_id], f"[{run.run_id}]"
        windows = (p | f"SegmentFiles{tag}" >> beam.Create(run.files("segments", storage_options))
                   | f"SpreadSegmentFiles{tag}" >> beam.Reshuffle()
                   | f"ReadWindows{tag}" >> beam.ParDo(ScoreSegmentFile(doc, run.run_id, storage_options)))
        clips = (p | f"ClipFiles{tag}" >> beam.Create(run.files("clips", storage_options))
                 | f"SpreadClipFiles{tag}" >> beam.Reshuffle()
                 | f"ReadClips{tag}" >> beam.ParDo(ReadParquetRows(["clip_id", "labelled_at"], storage_options)))
        scored = ({WINDOWS: windows, CLIPS: clips}
                  | f"JoinByClip{tag}" >> beam.CoGroupByKey()
                  | f"Score{tag}" >> beam.ParDo(ScoreClipWindows(doc, run.run_id)).with_outputs("tally", main="rows"))
        scored.rows | f"WriteCustomLabels{tag}" >> WriteTable(
            attempt.table_prefix(attempt.table), CUSTOM_LABELS_SCHEMA, settings, file_name_suffix=".parquet")
        (scored.tally
         | f"Tallies{tag}" >> beam.CombineGlobally(SumTallies())
         | f"TalliesJson{tag}" >> beam.Map(json.dumps)
         | f"WriteTallies{tag}" >> carrying_filesystem_settings(
             beam.io.WriteToText(attempt.summary_stats_path, shard_name_template="", num_shards=1), settings))


def check_accounting(run: PublishedRun, attempt: ApplyAttempt, classifier: LinearClassifier,
                     storage_options: dict | None) -> dict:
    stats = read_run_stats(attempt, storage_options)
    tables = run.manifest["tables"]
    if stats[WINDOWS] != tables["segments"]:
        raise AccountingError(f"run {run.run_id}: {stats[WINDOWS]} windows scored but the run has "
                              f"{tables['segments']} segments rows")
    if stats[CLIPS] != tables["clips"]:
        raise AccountingError(f"run {run.run_id}: {stats[CLIPS]} clips scored but the run has {tables['clips']}")
    # One row per window and label, by construction: the rows the files must hold.
    rows = stats[WINDOWS] * len(classifier.labels)
    table_fs, _ = filesystem(attempt.table_dir(attempt.table), storage_options)
    committed = parquet_rows(table_fs, attempt_files(attempt, attempt.table, storage_options))
    if committed != rows:
        raise AccountingError(f"run {run.run_id}: the custom_labels files hold {committed} rows, not "
                              f"{stats[WINDOWS]} windows x {len(classifier.labels)} labels")
    return {WINDOWS: stats[WINDOWS], ROWS: rows, CLIPS: stats[CLIPS], POSITIVE: stats[POSITIVE]}


def publish_apply(run: PublishedRun, attempt: ApplyAttempt, classifier: LinearClassifier, stats: dict,
                  storage_options: dict | None, catalog=None, namespace: str | None = None) -> dict:
    """promote -> (Iceberg) -> manifest -> retire, as a run is published."""
    output = attempt.output
    files = promote(attempt, storage_options, tables=(attempt.table,))
    uris = output_uris(output, files[attempt.table], storage_options)
    manifest = {
        "classifier_id": attempt.classifier_id, "run_id": run.run_id, "run_attempt": run.attempt,
        "attempt": attempt.attempt_id, "files": files, "table": "custom_labels",
        "counts": dict(stats),
        "classifier": {"name": classifier.name, "labels": list(classifier.labels),
                       "thresholds": classifier.thresholds.tolist(), "metrics": classifier.metrics,
                       "embedding_fingerprint": classifier.embedding_fingerprint},
        "published_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "versions": package_versions(),
    }
    # Until the manifest is written, any failure moves this attempt's files back (as a run's
    # publication does): promoted files are never left without a manifest naming them.
    try:
        if catalog is not None:
            from pipeline.lakehouse.iceberg_commit import publish_custom_labels

            manifest["iceberg"] = {"namespace": namespace, "snapshot": publish_custom_labels(
                catalog, namespace, attempt.classifier_id, run.run_id, uris, manifest["counts"], storage_options)}
        write_json_document(manifest_path(output, attempt.classifier_id, run.run_id), manifest, storage_options)
    except BaseException:
        unpromote(attempt, files, storage_options)
        raise
    try:
        retire_other_attempts(output, run.run_id, manifest, storage_options, tables=(attempt.table,),
                              meta_dir=meta_dir(output, attempt.classifier_id, run.run_id))
    except Exception as e:
        _LOG.error("custom labels %s/%s: published, but removing earlier attempts failed: %s",
                   attempt.classifier_id, run.run_id, e)
    return manifest


def apply_classifier(output: str, classifier: LinearClassifier, beam_args: list[str] | None = None,
                     storage_options: dict | None = None, public_storage_options: dict | None = None,
                     runs: list[str] | None = None, catalog=None, namespace: str | None = None) -> ApplyReport:
    """Score every pending run's windows and publish each run's partition. ``storage_options``:
    complete (the launcher's reads and publication); ``public_storage_options``: without
    credentials (what the workers are given; they find credentials in their environment)."""
    report = ApplyReport(classifier.classifier_id)
    runs_to_score = pending_runs(output, classifier, storage_options, runs, report)
    if not runs_to_score:
        return report
    attempts = {r.run_id: ApplyAttempt.start(output, r.run_id, classifier.classifier_id) for r in runs_to_score}
    argv = list(beam_args or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        argv.append("--runner=DirectRunner")
    options = PipelineOptions(argv)
    p = beam.Pipeline(options=options)
    public = public_storage_options if public_storage_options is not None else (storage_options or {})
    build_apply_pipeline(p, classifier, runs_to_score, attempts, public, filesystem_settings(options))
    result = p.run()
    result.wait_until_finish()
    for run in runs_to_score:
        stats = check_accounting(run, attempts[run.run_id], classifier, storage_options)
        manifest = publish_apply(run, attempts[run.run_id], classifier, stats, storage_options, catalog, namespace)
        report.published[run.run_id] = manifest["counts"]
    return report
