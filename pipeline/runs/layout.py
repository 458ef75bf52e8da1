"""Where a run's files go, in one place.

    <output>/<table>/run_id=<run_id>/part-<attempt>-SSSSS-of-NNNNN.parquet
        the published rows of clips, segments and errors: one Hive-style partition folder per
        run, so Spark, DuckDB, Polars and pyarrow discover every run under <output>/<table>
    <output>/_runs/<run_id>/_MANIFEST.json
        the run's pointer: which attempt is published and its files; written last
    <output>/_runs/<run_id>/_LEASE.json
        held (with an expiry) while a launcher runs this run id
    <output>/_runs/<run_id>/<attempt>/<table>/part-<attempt>-SSSSS-of-NNNNN.parquet
        what one attempt's job writes (Beam's temporary files included); moved into the table
        folders only after the attempt succeeded
    <output>/_runs/<run_id>/<attempt>/_stats/summary.json, _stats/shards/part-*.parquet
        the attempt's tallies (accounting, summary) and per-shard records (--skip_labelled)
    <output>/_runs/<run_id>/<attempt>/_ICEBERG.json
        written (--iceberg_catalog) before the attempt's first Iceberg commit: the catalog and
        namespace that may point at its files, so a reconciliation without that catalog leaves
        them in the table folders
    <output>/_runs/<run_id>/<attempt>/_progress/<host>-<pid>.json
        each worker process's running counts while the job runs, for the launcher's progress
        line only (transforms/progress.py); removed when the job has ended

Nothing but Parquet files of ours sits under a table folder: at rest, exactly those the manifests
name (a launcher publishing, or one killed midway, leaves others there until it finishes or the
next reconciliation, pipeline/runs/reconcile.py). Everything of ours that is not a table starts
with ``_``, which Spark, Hive and pyarrow's discovery skip. The ``_stats``
files are written by the pipeline itself (data, committed once by Beam), so the launcher checks
the accounting and prints the summary from them without reading the tables.
"""
from __future__ import annotations

import datetime
import re
import secrets
from dataclasses import dataclass

TABLE_NAMES = ("clips", "segments", "errors")
RUNS_DIR = "_runs"
MANIFEST_NAME = "_MANIFEST.json"
LEASE_NAME = "_LEASE.json"
ICEBERG_MARKER_NAME = "_ICEBERG.json"
STATS_DIR = "_stats"
PROGRESS_DIR = "_progress"
SUMMARY_STATS_NAME = "summary.json"
SHARD_STATS_DIR = "shards"
PARTITION_KEY = "run_id"


# What a run id may be: it names folders (``_runs/<run_id>``, ``run_id=<run_id>``) and is a
# partition value, so one path segment that no store, shell glob or reader takes for anything
# else: letters, digits, ``.``, ``_``, ``-``; never ``.`` or ``..``; at most RUN_ID_MAX_LENGTH.
RUN_ID_MAX_LENGTH = 128
RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,%d}" % RUN_ID_MAX_LENGTH)
RUN_ID_RULE = (f"1-{RUN_ID_MAX_LENGTH} letters, digits, '.', '_' or '-', and not '.' or '..'")


class InvalidRunId(ValueError):
    """A run id outside the documented pattern (RUN_ID_RULE)."""


def is_run_id(value) -> bool:
    return isinstance(value, str) and RUN_ID.fullmatch(value) is not None and value not in (".", "..")


def check_run_id(value) -> str:
    """``value`` if it is a run id, else InvalidRunId naming it and the rule."""
    if not is_run_id(value):
        raise InvalidRunId(f"--run_id {value!r} is not a run id: {RUN_ID_RULE}")
    return value


def _root(output: str) -> str:
    return output.rstrip("/")


def published_table_dir(output: str, run_id: str, table: str) -> str:
    """The partition folder holding a run's published files of one table."""
    return f"{_root(output)}/{table}/{PARTITION_KEY}={check_run_id(run_id)}"


def run_meta_dir(output: str, run_id: str) -> str:
    return f"{_root(output)}/{RUNS_DIR}/{check_run_id(run_id)}"


def manifest_path(output: str, run_id: str) -> str:
    return f"{run_meta_dir(output, run_id)}/{MANIFEST_NAME}"


def lease_path(output: str, run_id: str) -> str:
    return f"{run_meta_dir(output, run_id)}/{LEASE_NAME}"


# What new_attempt_id makes: tools that find attempt folders (pipeline/runs/table_files.py) match it.
ATTEMPT_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def attempt_of_file(name: str) -> str | None:
    """The attempt id in a table file's name (``part-<attempt>-SSSSS-of-NNNNN.parquet``), or None."""
    found = re.fullmatch(r"part-(%s)-.*" % ATTEMPT_ID.pattern, name)
    return found.group(1) if found else None


def new_attempt_id() -> str:
    """Sorts by start time; unique across launchers."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)


@dataclass(frozen=True)
class Attempt:
    """One launch of a run id: its own folder, so a failed attempt never touches what an earlier
    attempt published."""
    output: str
    run_id: str
    attempt_id: str

    @classmethod
    def new(cls, output: str, run_id: str) -> "Attempt":
        return cls(output, run_id, new_attempt_id())

    @property
    def root(self) -> str:
        return f"{run_meta_dir(self.output, self.run_id)}/{self.attempt_id}"

    def table_dir(self, table: str) -> str:
        return f"{self.root}/{table}"

    def table_prefix(self, table: str) -> str:
        """File prefix handed to Beam's sink: files are ``<prefix>-SSSSS-of-NNNNN.parquet``; the
        attempt id in the name keeps the files of two attempts apart in the partition folder."""
        return f"{self.table_dir(table)}/part-{self.attempt_id}"

    @property
    def stats_dir(self) -> str:
        return f"{self.root}/{STATS_DIR}"

    @property
    def summary_stats_path(self) -> str:
        return f"{self.stats_dir}/{SUMMARY_STATS_NAME}"

    @property
    def shard_stats_dir(self) -> str:
        return f"{self.stats_dir}/{SHARD_STATS_DIR}"

    @property
    def iceberg_marker_path(self) -> str:
        return f"{self.root}/{ICEBERG_MARKER_NAME}"

    @property
    def progress_dir(self) -> str:
        return f"{self.root}/{PROGRESS_DIR}"

    @property
    def shard_stats_prefix(self) -> str:
        return f"{self.shard_stats_dir}/part"
