"""Find and read the Parquet files of a run's tables from a path or fsspec URL. Beam-free.

Inside an output root, every read goes through the manifests (never a listing of the table
folders), so a reader sees published attempts only: the output root itself or one of its
table folders (``<output>``, ``<output>/clips``) reads the published rows of every run (for
``clips``: the current labels, the latest row per clip; for ``errors``: the errors of inputs
still not labelled), a partition folder (``<output>/clips/run_id=<id>``) the files that run's
manifest names.
"""
from __future__ import annotations

import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.runs import store
from pipeline.runs.layout import ATTEMPT_ID, MANIFEST_NAME, PARTITION_KEY, RUNS_DIR, TABLE_NAMES, is_run_id


def _within_output(fs, root: str) -> tuple[str, str | None, str | None] | None:
    """(output root, table, run id) when ``root`` is an output root (it holds ``_runs/``), one of
    its table folders (run id None) or one of their partition folders; else None."""
    root = root.rstrip("/")
    if fs.isdir(f"{root}/{RUNS_DIR}"):
        return root, None, None
    parent, _, name = root.rpartition("/")
    if name in TABLE_NAMES and parent and fs.isdir(f"{parent}/{RUNS_DIR}"):
        return parent, name, None
    grand, _, table = parent.rpartition("/")
    run_id = name[len(PARTITION_KEY) + 1:] if name.startswith(f"{PARTITION_KEY}=") else None
    if table in TABLE_NAMES and is_run_id(run_id) and grand and fs.isdir(f"{grand}/{RUNS_DIR}"):
        return grand, table, run_id
    return None


def _published(fs, output: str, table: str, run_id: str | None) -> list[str]:
    """Paths of the files of ``table`` the manifests name: one run's, or every published run's."""
    from pipeline.runs.publish import finished_runs, published_files

    url = output if store.is_local(fs) else fs.unstrip_protocol(output)
    runs = [run_id] if run_id is not None else finished_runs(url)
    if run_id is not None and not fs.isfile(f"{output}/{RUNS_DIR}/{run_id}/{MANIFEST_NAME}"):
        raise FileNotFoundError(f"run {run_id} under {url} is not published (no {MANIFEST_NAME}): its "
                                "files, if any, are not labels; read <output>/_runs/<run_id> to inspect its attempt")
    return [fs._strip_protocol(u) for r in runs for u in published_files(url, r, table)]


def _read(fs, files: list[str], columns: list[str] | None) -> pa.Table | None:
    parts = []
    for f in files:
        wanted = None
        if columns is not None:
            names = pq.read_schema(f, filesystem=fs).names
            wanted = [c for c in columns if c in names]
        parts.append(pq.read_table(f, filesystem=fs, columns=wanted))
    return pa.concat_tables(parts, promote_options="default") if parts else None


def read_published(fs, output: str, table: str, run_id: str | None = None,
                   columns: list[str] | None = None) -> pa.Table | None:
    """``table`` of the output root ``output`` as its manifests publish it: one run's rows, or
    without a run id every run's, narrowed for ``clips`` to the current labels and for ``errors``
    to the inputs still not labelled (pipeline/lakehouse/iceberg_read.py's rules). None when no
    published file has rows of it."""
    from pipeline.lakehouse.iceberg_read import CURRENT_KEY, current_errors, current_rows

    if run_id is not None or table not in ("clips", "errors"):
        return _read(fs, _published(fs, output, table, run_id), columns)
    extra = list(CURRENT_KEY) + (["source_uri", "recorded_at"] if table == "errors" else [])
    wanted = None if columns is None else columns + [c for c in extra if c not in columns]
    rows = _read(fs, _published(fs, output, table, None), wanted)
    if rows is None:
        return None
    if table == "clips":
        rows = current_rows(rows)
    else:
        clips = _read(fs, _published(fs, output, "clips", None), ["clip_id", "source_uri", "labelled_at", "run_id"])
        labelled = current_rows(clips) if clips is not None else None
        if labelled is not None:
            rows = current_errors(rows, labelled)
    return rows.select([c for c in columns if c in rows.column_names]) if columns is not None else rows


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
        return store.parquet_children(fs, f"{attempts[-1]}/{table}")
    return None


def read_parquet_path(path: str, table: str = "clips") -> pa.Table:
    """One table from ``path``: a .parquet file, a directory of part files, a run folder
    (``<output>/_runs/<run_id>``) whose manifest names them, or inside an output root (module
    docstring) its published rows: ``<output>``, ``<output>/clips`` (current labels),
    ``<output>/clips/run_id=<id>`` (that run's, as its manifest names them).

    Raises FileNotFoundError naming the path when nothing matches.
    """
    fs, root = fsspec.core.url_to_fs(path)
    within = _within_output(fs, root) if fs.isdir(root) else None
    if within is not None:
        output, in_table, run_id = within
        found = read_published(fs, output, in_table or table, run_id)
        if found is None:
            raise FileNotFoundError(f"no published {in_table or table} rows under {path}")
        return found
    if fs.isfile(root):
        files = [root]
    elif fs.isdir(root):
        files = store.parquet_children(fs, root) or run_table_files(fs, root, table) or (
            store.parquet_children(fs, f"{root.rstrip('/')}/{table}") if fs.isdir(f"{root.rstrip('/')}/{table}") else [])
    else:
        raise FileNotFoundError(f"no such file or directory: {path}")
    if not files:
        raise FileNotFoundError(f"no .parquet files in {path} or in {path.rstrip('/')}/{table}/")
    return pa.concat_tables([pq.read_table(f, filesystem=fs) for f in files], promote_options="default")


def read_optional_table(run: str, table: str, columns: list[str] | None = None) -> pa.Table | None:
    """One table of the run folder ``run`` (see run_table_files; also a plain folder holding
    ``<table>/*.parquet``; or an output root, read through its manifests: module docstring) as
    one table, or None when there are no such Parquet files.
    ``columns``: read only these (those a file lacks are left out), never e.g. scores/embeddings."""
    fs, run_root = fsspec.core.url_to_fs(run)
    within = _within_output(fs, run_root) if fs.isdir(run_root) else None
    if within is not None:
        output, in_table, run_id = within
        return read_published(fs, output, table, run_id, columns) if in_table in (None, table) else None
    files = run_table_files(fs, run_root, table) if fs.isdir(run_root) else None
    if files is None:
        root = f"{run_root.rstrip('/')}/{table}"
        files = store.parquet_children(fs, root) if fs.isdir(root) else []
    return _read(fs, files, columns)
