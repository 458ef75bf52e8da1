"""Find and read the Parquet files of a run's tables from a path or fsspec URL. Beam-free."""
from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


def _parquet_files(fs, root: str) -> list[str]:
    return sorted(p for p in fs.glob(f"{root.rstrip('/')}/*.parquet"))


def read_parquet_path(path: str, table: str = "clips") -> pa.Table:
    """One table from ``path``: a .parquet file, a directory of part files (``<run>/clips``), or a
    run directory (``<output>/<run_id>``) whose ``<table>/`` subdirectory holds them.

    Raises FileNotFoundError naming the path when nothing matches.
    """
    fs, root = fsspec.core.url_to_fs(path)
    if fs.isfile(root):
        files = [root]
    elif fs.isdir(root):
        files = _parquet_files(fs, root) or (
            _parquet_files(fs, f"{root.rstrip('/')}/{table}") if fs.isdir(f"{root.rstrip('/')}/{table}") else [])
    else:
        raise FileNotFoundError(f"no such file or directory: {path}")
    if not files:
        raise FileNotFoundError(f"no .parquet files in {path} or in {path.rstrip('/')}/{table}/")
    return pa.concat_tables([pq.read_table(f, filesystem=fs) for f in files], promote_options="default")


def read_optional_table(run: str, table: str, columns: list[str] | None = None) -> pa.Table | None:
    """``<run>/<table>/*.parquet`` as one table, or None when that directory has no Parquet files.
    ``columns``: read only these (those a file lacks are left out), never e.g. scores/embeddings."""
    fs, root = fsspec.core.url_to_fs(f"{run.rstrip('/')}/{table}")
    if not fs.isdir(root):
        return None
    files = _parquet_files(fs, root)
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
