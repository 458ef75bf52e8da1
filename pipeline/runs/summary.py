"""A run's accounting and summary, from the small statistics the pipeline wrote about itself.

The launcher never reads the label tables whole: ``<run>/_stats/summary.json`` (written by the
pipeline, transforms/run_stats.py) holds every count, and the tables' Parquet footers (row counts
only, a few KB per file) confirm that what was committed matches it. Its memory does not grow
with the number of clips. ``RunSummary.clips``/``errors``/``segments`` read a table on demand for
callers that want the rows (tests, notebooks); the launcher does not use them.
"""
from __future__ import annotations

import contextlib
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.runs.publish import attempt_files, published_files
from pipeline.runs.layout import Attempt
from schemas.tables import TABLES
from transforms.io.storage import options_for_protocol, protocol_of

TOP_LABELS_SHOWN = 5


def format_duration(seconds: float) -> str:
    """12.3 s, 4.5 min, 2.25 h: audio lengths as people read them."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


class AccountingError(RuntimeError):
    """Inputs were lost or duplicated: the run must not be trusted."""


class NothingDiscoveredError(RuntimeError):
    """The run found no audio at all (see --allow_empty)."""


def _fs(url: str, storage_options: dict | None):
    return fsspec.core.url_to_fs(url, **options_for_protocol(storage_options or {}, protocol_of(url)))


def _read_files(fs, files: list[str], table: str, columns: list[str] | None) -> pa.Table:
    if not files:
        empty = TABLES[table].empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(pq.read_table(f, filesystem=fs, columns=columns) for f in files)


def parquet_rows(fs, files: list[str]) -> int:
    """Rows in Parquet files on ``fs``, from their footers only."""
    total = 0
    for f in files:
        with fs.open(f, "rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def read_table(output: str, run_id: str, table: str, storage_options: dict | None = None,
               columns: list[str] | None = None) -> pa.Table:
    """One table of a published run: the files its manifest names (any fsspec URL;
    storage_options as for --storage_options). Reads the whole table (or the columns asked for):
    not for the launcher."""
    fs, _ = _fs(output, storage_options)
    return _read_files(fs, _published_paths(output, run_id, table, storage_options), table, columns)


def _published_paths(output: str, run_id: str, table: str, storage_options: dict | None) -> list[str]:
    """fsspec paths of the files a published run's manifest names for ``table``."""
    return [_fs(u, storage_options)[1] for u in published_files(output, run_id, table, storage_options)]


def read_run_stats(attempt: Attempt, storage_options: dict | None = None) -> dict:
    """The attempt's statistics (one small JSON document) as the pipeline wrote them."""
    path = attempt.summary_stats_path
    fs, root = _fs(path, storage_options)
    if not fs.exists(root):
        raise AccountingError(f"run {attempt.run_id}: the pipeline wrote no statistics ({path}); "
                              "the job did not finish its writes")
    return json.loads(fs.cat_file(root))


class RunSummary:
    """What a run did, from its statistics (see transforms/run_stats.py for the names)."""

    def __init__(self, attempt: Attempt, stats: dict, storage_options: dict | None = None,
                 seconds: float | None = None):
        self.attempt = attempt
        self.run_id = attempt.run_id
        self.output = attempt.output
        # Set once the run is published: its rows are then read from the table folders.
        self.published = False
        self.stats = stats
        self.storage_options = storage_options
        self.seconds = seconds               # wall time of the run, launch to publication
        self.incremental = False             # --skip_labelled: the skipped count is always shown
        # Entered around on-demand table reads: the launcher sets its storage settings' scope,
        # which puts the credentials in place and keeps them out of (botocore's DEBUG) logs.
        self.read_scope = contextlib.nullcontext
        self._tables: dict[str, pa.Table] = {}

    @classmethod
    def read(cls, attempt: Attempt, storage_options: dict | None = None) -> "RunSummary":
        return cls(attempt, read_run_stats(attempt, storage_options), storage_options)

    def _count(self, name: str) -> int:
        return int(self.stats.get("counts", {}).get(name, 0))

    @property
    def discovered(self) -> int:
        return self._count("discovered")

    @property
    def labelled(self) -> int:
        return self._count("labelled")

    @property
    def errored(self) -> int:
        return self._count("errored")

    @property
    def skipped(self) -> int:
        """Clips labelled the same way by an earlier run (--skip_labelled)."""
        return self._count("skipped")

    @property
    def sources(self) -> int:
        """Files and shards discovery found."""
        return self._count("sources")

    @property
    def windows_scored(self) -> int:
        """Windows through inference, errored clips' included."""
        return self._count("windows_scored")

    @property
    def inference_batches(self) -> int:
        return self._count("inference_batches")

    @property
    def audio_seconds(self) -> float:
        """Decoded audio of the labelled clips."""
        return self._count("audio_milliseconds") / 1000.0

    @property
    def clips_without_labels(self) -> int:
        """Labelled clips that kept no label (none passed --threshold / --class_thresholds)."""
        return self._count("clips_without_labels")

    @property
    def segment_rows(self) -> int:
        return self._count("segment_rows")

    @property
    def shards_read(self) -> int:
        return self._count("shards_read")

    @property
    def shards_skipped(self) -> int:
        """Tar shards not opened: unchanged, every member labelled the same way before."""
        return self._count("shards_skipped")

    @property
    def members_ignored(self) -> int:
        """Non-audio members of shards (no rows)."""
        return self._count("members_ignored")

    @property
    def files_passed_over(self) -> dict[str, int]:
        """What directory scans left out (neither audio nor shards), by extension or kind."""
        return dict(sorted(self.stats.get("files_passed_over", {}).items()))

    @property
    def shards_by_worker(self) -> dict[int, int]:
        """Worker pid -> shards it read."""
        return {int(pid): n for pid, n in self.stats.get("shards_read_by_worker", {}).items()}

    def _files(self, table: str) -> list[str]:
        """The table's files (fsspec paths): in the attempt's folder until the run is published,
        then where its manifest says."""
        if not self.published:
            return attempt_files(self.attempt, table, self.storage_options)
        return _published_paths(self.output, self.run_id, table, self.storage_options)

    # Rows on demand (whole tables: for tests and small runs, never used by the launcher).
    def _table(self, name: str) -> pa.Table:
        if name not in self._tables:
            with self.read_scope():
                fs, _ = _fs(self.output, self.storage_options)
                self._tables[name] = _read_files(fs, self._files(name), name, None)
        return self._tables[name]

    @property
    def clips(self) -> pa.Table:
        return self._table("clips")

    @property
    def errors(self) -> pa.Table:
        return self._table("errors")

    @property
    def segments(self) -> pa.Table:
        return self._table("segments")

    def check_accounting(self, verify_tables: bool = True) -> None:
        """Every discovered input is labelled, errored or skipped, once; every labelled clip has
        exactly its num_windows segments rows; the committed tables hold the rows counted.
        ``verify_tables``: also read the tables' Parquet footers (row counts)."""
        labelled, errored, skipped, discovered = self.labelled, self.errored, self.skipped, self.discovered
        if labelled + errored + skipped != discovered:
            raise AccountingError(
                f"run {self.run_id}: {discovered} inputs discovered but {labelled} labelled + "
                f"{errored} errored + {skipped} skipped = {labelled + errored + skipped}")
        examples = self.stats.get("examples", {})
        if self._count("clip_ids_duplicated"):
            raise AccountingError(f"run {self.run_id}: duplicate clip ids in the clips table, e.g. "
                                  f"{examples.get('clip_ids_duplicated', [])}")
        if self._count("clips_segments_mismatched"):
            raise AccountingError(
                f"run {self.run_id}: segments rows do not match the clips' num_windows for "
                f"{self._count('clips_segments_mismatched')} clip(s), e.g. "
                f"{examples.get('clips_segments_mismatched', [])}")
        if self.segment_rows != self._count("num_windows_total"):
            raise AccountingError(f"run {self.run_id}: {self.segment_rows} segments rows but the "
                                  f"clips' num_windows add up to {self._count('num_windows_total')}")
        if verify_tables:
            fs, _ = _fs(self.output, self.storage_options)
            for table, expected in (("clips", labelled), ("errors", errored),
                                    ("segments", self.segment_rows)):
                committed = parquet_rows(fs, self._files(table))
                if committed != expected:
                    raise AccountingError(f"run {self.run_id}: the {table} table holds {committed} "
                                          f"rows but the run counted {expected}")

    def check_not_empty(self) -> None:
        if not self.sources:
            raise NothingDiscoveredError(
                f"run {self.run_id}: no audio file or shard was found "
                f"({self.errored} input(s) failed discovery"
                f"{', listed below' if self.errored else ''}); nothing published "
                "(--allow_empty publishes such a run)")

    def first_errors(self, n: int) -> list[dict]:
        """Up to ``n`` rows of the errors table (source_uri, stage, error_type, message), for a
        failed run's message: the first batch of the first files only, so memory does not grow
        with the table."""
        rows: list[dict] = []
        columns = ["source_uri", "stage", "error_type", "message"]
        with self.read_scope():
            fs, _ = _fs(self.output, self.storage_options)
            for path in self._files("errors"):
                with fs.open(path, "rb") as handle:
                    for batch in pq.ParquetFile(handle).iter_batches(batch_size=n, columns=columns):
                        rows.extend(batch.to_pylist())
                        break
                if len(rows) >= n:
                    break
        return rows[:n]

    def counts(self) -> dict:
        """The accounting as one dict (manifest, --max_error_fraction)."""
        return {"discovered": self.discovered, "labelled": self.labelled,
                "errored": self.errored, "skipped": self.skipped,
                "errors_by_type": dict(sorted(self.stats.get("errors_by_type", {}).items()))}

    def top_labels(self, n: int = TOP_LABELS_SHOWN) -> list[tuple[str, int]]:
        """Most frequent top-1 labels over the labelled clips."""
        counts = self.stats.get("top_labels", {})
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def figures(self) -> dict:
        """What the run did beyond the accounting (the manifest's ``figures``; the report shows them)."""
        return {"audio_seconds": self.audio_seconds, "clips_without_labels": self.clips_without_labels,
                "windows_scored": self.windows_scored, "inference_batches": self.inference_batches,
                "sources": self.sources, "shards_read": self.shards_read, "shards_skipped": self.shards_skipped,
                "shard_members_ignored": self.members_ignored}

    def render(self) -> str:
        where = (f"{self.output.rstrip('/')}/{{clips,segments,errors}}/run_id={self.run_id}/"
                 if self.published else f"{self.attempt.root}/ (not published)")
        audio = f", {format_duration(self.audio_seconds)} of audio" if self.audio_seconds else ""
        lines = [f"run {self.run_id} -> {where}",
                 f"  inputs discovered: {self.discovered}",
                 f"  clips labelled:    {self.labelled} ({self.segment_rows} windows{audio})"]
        if self.clips_without_labels:
            lines.append(f"  clips that kept no label: {self.clips_without_labels} of {self.labelled} "
                         "(no label passed the threshold)")
        if self.windows_scored:
            lines.append(f"  windows scored:    {self.windows_scored} in {self.inference_batches} "
                         "inference batches")
        lines.append(f"  inputs errored:    {self.errored}")
        if self.skipped or self.incremental:
            whole = f", {self.shards_skipped} whole shard(s) not read" if self.shards_skipped else ""
            lines.append(f"  clips skipped:     {self.skipped} (labelled by an earlier run{whole})")
        if self.seconds:
            rate = (f" ({self.audio_seconds / self.seconds:.1f} s of audio per second)"
                    if self.audio_seconds else "")
            windows = f", {self.windows_scored / self.seconds:.2f} windows/s" if self.windows_scored else ""
            lines.append(f"  throughput:        {self.labelled / self.seconds:.2f} clips/s{rate}{windows} "
                         f"over {self.seconds:.1f} s")
        for kind, n in self.counts()["errors_by_type"].items():
            lines.append(f"    {kind}: {n}")
        if self.shards_read:
            lines.append(f"  tar shards read:   {self.shards_read} (by worker pid: " + ", ".join(
                f"{pid}: {n}" for pid, n in sorted(self.shards_by_worker.items())) + ")")
            lines.append(f"  shard members ignored (not audio, not .json): {self.members_ignored}")
        if self.files_passed_over:
            lines.append("  files passed over (not audio, not shards): " + ", ".join(
                f"{kind}: {n}" for kind, n in self.files_passed_over.items()))
        if self.labelled and self.top_labels():
            lines.append("  most frequent top label: " + ", ".join(
                f"{label} ({n})" for label, n in self.top_labels()))
        return "\n".join(lines)
