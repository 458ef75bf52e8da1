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
    <output>/_runs/<run_id>/<attempt>/_progress/<host>-<pid>.json
        each worker process's running counts while the job runs, for the launcher's progress
        line only (transforms/progress.py); removed when the job has ended

Nothing but published Parquet files ever sits under a table folder, and everything of ours that is
not a table starts with ``_``, which Spark, Hive and pyarrow's discovery skip. The ``_stats``
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
STATS_DIR = "_stats"
PROGRESS_DIR = "_progress"
SUMMARY_STATS_NAME = "summary.json"
SHARD_STATS_DIR = "shards"
PARTITION_KEY = "run_id"


def _root(output: str) -> str:
    return output.rstrip("/")


def published_table_dir(output: str, run_id: str, table: str) -> str:
    """The partition folder holding a run's published files of one table."""
    return f"{_root(output)}/{table}/{PARTITION_KEY}={run_id}"


def run_meta_dir(output: str, run_id: str) -> str:
    return f"{_root(output)}/{RUNS_DIR}/{run_id}"


def manifest_path(output: str, run_id: str) -> str:
    return f"{run_meta_dir(output, run_id)}/{MANIFEST_NAME}"


def lease_path(output: str, run_id: str) -> str:
    return f"{run_meta_dir(output, run_id)}/{LEASE_NAME}"


# What new_attempt_id makes: tools that find attempt folders (pipeline/runs/table_files.py) match it.
ATTEMPT_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


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
    def progress_dir(self) -> str:
        return f"{self.root}/{PROGRESS_DIR}"

    @property
    def shard_stats_prefix(self) -> str:
        return f"{self.shard_stats_dir}/part"


def relative_to_output(output: str, path: str) -> str:
    """``path`` (under ``output``) as the manifest records it: relative, so an output root can be
    copied or mounted elsewhere and its manifests still hold."""
    root = _root(output).split("://", 1)[-1]
    bare = path.split("://", 1)[-1]
    if not bare.startswith(root + "/"):
        raise ValueError(f"{path} is not under {output}")
    return bare[len(root) + 1:]


def under_output(output: str, relative: str) -> str:
    return f"{_root(output)}/{relative}"
