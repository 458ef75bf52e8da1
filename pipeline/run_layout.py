"""Where a run's files go, in one place: tables, the run's own statistics, the manifest.

    <output>/<run_id>/<table>/part-*.parquet       clips, segments, errors (Beam file sinks)
    <output>/<run_id>/_stats/summary.json          the run's tallies (accounting, summary)
    <output>/<run_id>/_stats/shards/part-*.parquet one row per tar shard seen (--skip_labelled)
    <output>/<run_id>/_MANIFEST.json               written last: the run is published

The ``_stats`` files are written by the pipeline itself (data, committed once by Beam), so the
launcher checks the accounting and prints the summary from them without reading the tables.
"""
from __future__ import annotations

MANIFEST_NAME = "_MANIFEST.json"
STATS_DIR = "_stats"
SUMMARY_STATS_NAME = "summary.json"
SHARD_STATS_DIR = "shards"


def run_root(output: str, run_id: str) -> str:
    return f"{output.rstrip('/')}/{run_id}"


def table_dir(output: str, run_id: str, table: str) -> str:
    return f"{run_root(output, run_id)}/{table}"


def table_prefix(output: str, run_id: str, table: str) -> str:
    """File prefix handed to Beam's sink: files are ``<prefix>-SSSSS-of-NNNNN.parquet``."""
    return f"{table_dir(output, run_id, table)}/part"


def stats_dir(output: str, run_id: str) -> str:
    return f"{run_root(output, run_id)}/{STATS_DIR}"


def summary_stats_path(output: str, run_id: str) -> str:
    return f"{stats_dir(output, run_id)}/{SUMMARY_STATS_NAME}"


def shard_stats_dir(output: str, run_id: str) -> str:
    return f"{stats_dir(output, run_id)}/{SHARD_STATS_DIR}"


def shard_stats_prefix(output: str, run_id: str) -> str:
    return f"{shard_stats_dir(output, run_id)}/part"
