"""Find and read the Parquet files of a run's tables from a path or fsspec URL. Beam-free."""
from __future__ import annotations

import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.runs.layout import ATTEMPT_ID, MANIFEST_NAME


def _parquet_files(fs, root: str) -> list[str]:
    return sorted(p for p in fs.glob(f"{root.rstrip('/')}/*.parquet"))


def run_table_files(fs, run_root: str, table: str) -> list[str] | None:
    """Files of ``table`` for a run folder ``<output>/_runs/<run_id>``: those its manifest names
    (relative to ``<output>``); for a run that never published, those of its newest attempt
    folder. None when ``run_root`` is not such a folder."""
    run_root = run_root.rstrip("/")
    manifest = f"{run_root}/{MANIFEST_NAME}"
    if fs.isfile(manifest):
        files = json.loads(fs.cat_file(manifest)).get("files")
        if isinstance(files, dict):
            output_root = run_root.rsplit("/", 2)[0]
            return [f"{output_root}/{p}" for p in files.get(table, [])]
    attempts = sorted(p for p in fs.ls(run_root, detail=False)
                      if ATTEMPT_ID.fullmatch(p.rstrip("/").rsplit("/", 1)[-1]) and fs.isdir(p))
    if attempts:
        return _parquet_files(fs, f"{attempts[-1]}/{table}")
    return None


def read_parquet_path(path: str, table: str = "clips") -> pa.Table:
    """One table from ``path``: a .parquet file, a directory of part files
    (``<output>/clips/run_id=<id>``), or a run folder (``<output>/_runs/<run_id>``) whose manifest
    names them.

    Raises FileNotFoundError naming the path when nothing matches.
    """
    fs, root = fsspec.core.url_to_fs(path)
    if fs.isfile(root):
        files = [root]
    elif fs.isdir(root):
        files = _parquet_files(fs, root) or run_table_files(fs, root, table) or (
            _parquet_files(fs, f"{root.rstrip('/')}/{table}") if fs.isdir(f"{root.rstrip('/')}/{table}") else [])
    else:
        raise FileNotFoundError(f"no such file or directory: {path}")
    if not files:
        raise FileNotFoundError(f"no .parquet files in {path} or in {path.rstrip('/')}/{table}/")
    return pa.concat_tables([pq.read_table(f, filesystem=fs) for f in files], promote_options="default")


def read_optional_table(run: str, table: str, columns: list[str] | None = None) -> pa.Table | None:
    """One table of the run folder ``run`` (see run_table_files; also a plain folder holding
    ``<table>/*.parquet``) as one table, or None when there are no such Parquet files.
    ``columns``: read only these (those a file lacks are left out), never e.g. scores/embeddings."""
    fs, run_root = fsspec.core.url_to_fs(run)
    files = run_table_files(fs, run_root, table) if fs.isdir(run_root) else None
    if files is None:
        root = f"{run_root.rstrip('/')}/{table}"
        files = _parquet_files(fs, root) if fs.isdir(root) else []
    if not files:
        return None
    parts = []
    for f in files:
        wanted = None
        if columns is not None:
            names = pq.read_schema(f, filesystem=fs).names
            wanted = [c for c in columns if c in names]
        parts.append(pq.read_table(f, filesystem=fs, columns=wanted))
    return pa.concat_tables(parts, promote_options="default")
