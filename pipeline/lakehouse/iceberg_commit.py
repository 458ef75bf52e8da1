"""Register a finished run's Parquet files in Apache Iceberg tables (pyiceberg).

One Iceberg table per label table (``<namespace>.clips``, ``.segments``, ``.errors``), partitioned
by ``run_id``. After a run succeeded, the files the pipeline wrote are added to each table in one
commit per table: no data passes through the launcher (only Parquet footers are read, for the
file statistics Iceberg keeps), and readers see a run's rows all at once or not at all. A rerun of
a run id replaces that run's files in the same commit (an ``overwrite`` snapshot). Each snapshot's
summary carries the run id and the run's counts.

The catalog is configured the way pyiceberg users already do: ``.pyiceberg.yaml`` or
``PYICEBERG_CATALOG__<NAME>__<KEY>`` variables (REST, Glue, Hive, SQL...). A name with no
configuration gets the embedded default, pyiceberg's SQL catalog on a SQLite file, when the output
is on local disk: ``<output>/_iceberg/catalog.db`` with the table metadata under
``<output>/_iceberg/warehouse``. For an output on object storage, name a configured catalog (a
SQLite file must be on a local disk).
"""
from __future__ import annotations

import logging
import os

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.runs import killpoint

_LOG = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "audio_labelling"
# Keys of the snapshot summary this project writes (Iceberg keeps them with the snapshot).
RUN_ID_PROPERTY = "audio-labelling.run-id"
COUNT_PROPERTY_PREFIX = "audio-labelling."
# Set on commits that undo or repair a run's files rather than publish an attempt.
ACTION_PROPERTY = "audio-labelling.action"


class IcebergSetupError(ValueError):
    """The catalog cannot be opened or the table does not fit the run's files."""


def embedded_catalog_properties(output: str) -> dict[str, str]:
    """pyiceberg SQL catalog on a SQLite file beside the tables of a local output root."""
    root = os.path.abspath(os.path.join(output.removeprefix("file://"), "_iceberg"))
    os.makedirs(os.path.join(root, "warehouse"), exist_ok=True)
    return {"type": "sql", "uri": f"sqlite:///{root}/catalog.db", "warehouse": f"file://{root}/warehouse"}


def open_catalog(name: str, output: str):
    """The catalog ``name`` as pyiceberg's configuration defines it, else the embedded default."""
    from pyiceberg.catalog import load_catalog
    from pyiceberg.utils.config import Config

    configured = Config().get_catalog_config(name)   # read now: tests and wrappers set env late
    if configured:
        return load_catalog(name, **configured)
    if "://" in output and not output.startswith("file://"):
        raise IcebergSetupError(
            f"--iceberg_catalog {name}: no pyiceberg configuration names this catalog, and the "
            f"embedded SQLite catalog needs a local --output (got {output}); configure it in "
            f".pyiceberg.yaml or with PYICEBERG_CATALOG__{name.upper()}__URI=... (and __WAREHOUSE=...)")
    return load_catalog(name, **embedded_catalog_properties(output))


def ensure_table(catalog, namespace: str, table: str, schema: pa.Schema):
    """The Iceberg table for one label table, created on first use, partitioned by run_id."""
    from pyiceberg.exceptions import NoSuchTableError

    identifier = f"{namespace}.{table}"
    catalog.create_namespace_if_not_exists(namespace)
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    created = catalog.create_table(identifier, schema=schema.remove_metadata())
    with created.update_spec() as spec:
        spec.add_identity("run_id")
    _LOG.info("created Iceberg table %s", identifier)
    return catalog.load_table(identifier)


def files_with_rows(paths: list[str], storage_options: dict | None = None) -> list[str]:
    """The paths among ``paths`` whose Parquet footer counts at least one row. Beam writes an
    empty file for an empty table; Iceberg needs none (and can infer no partition from it)."""
    kept = []
    for path in paths:
        fs, local = fsspec.core.url_to_fs(path, **(storage_options or {}))
        with fs.open(local, "rb") as f:
            if pq.ParquetFile(f).metadata.num_rows > 0:
                kept.append(path)
    return kept


def bare_path(uri: str) -> str:
    """A file's path without its scheme, so Iceberg's paths and the manifests' compare."""
    return uri.split("://", 1)[-1]


def run_data_files(table, run_id: str, partition: dict[str, str] | None = None) -> list:
    """The data files the table's current snapshot holds for run ``run_id`` (and ``partition``:
    further partition columns the files must match, e.g. custom_labels' classifier id)."""
    from pyiceberg.expressions import And, EqualTo

    if table.current_snapshot() is None:
        return []
    row_filter = EqualTo("run_id", run_id)
    for column, value in (partition or {}).items():
        row_filter = And(row_filter, EqualTo(column, value))
    return [task.file for task in table.scan(row_filter=row_filter).plan_files()]


def commit_run(table, run_id: str, files: list[str], counts: dict[str, int] | None = None,
               expect: list[str] | None = None, action: str | None = None,
               partition: dict[str, str] | None = None) -> int | None:
    """Replace run ``run_id``'s files in ``table`` by ``files``, in one commit. Returns the new
    snapshot id. ``files``: full URIs of Parquet files holding only this run's rows.

    ``expect``: commit only if the run's files in the table are exactly these (compare-and-set:
    Iceberg refuses the commit too if another one landed since this one read the table); returns
    None without committing otherwise. ``action``: recorded in the snapshot summary for
    commits that undo or repair (``rollback``, ``reconcile``). ``partition``: further partition
    columns the replaced files must match (custom_labels: the classifier id), besides run_id."""
    from pyiceberg.io.pyarrow import parquet_files_to_data_files
    from pyiceberg.table import TableProperties

    table.refresh()
    earlier = run_data_files(table, run_id, partition)
    if expect is not None and {bare_path(f.file_path) for f in earlier} != {bare_path(p) for p in expect}:
        return None
    properties = {RUN_ID_PROPERTY: run_id}
    properties.update({f"{COUNT_PROPERTY_PREFIX}{k}": str(v) for k, v in (counts or {}).items()
                       if isinstance(v, int)})
    if action:
        properties[ACTION_PROPERTY] = action
    with table.transaction() as tx:
        if tx.table_metadata.name_mapping() is None:
            # Beam's files carry no Iceberg field ids; columns are matched by name.
            tx.set_properties(**{TableProperties.DEFAULT_NAME_MAPPING:
                                 tx.table_metadata.schema().name_mapping.model_dump_json()})
        with tx.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
            for data_file in earlier:
                overwrite.delete_data_file(data_file)
            for data_file in parquet_files_to_data_files(table.io, tx.table_metadata, iter(files)):
                overwrite.append_data_file(data_file)
    table.refresh()
    return table.current_snapshot().snapshot_id


def publish_run(catalog, namespace: str, run_id: str, files: dict[str, list[str]], counts: dict[str, int],
                storage_options: dict | None = None, committed: dict[str, list[str]] | None = None,
                check=None) -> dict[str, int]:
    """Commit the run's published files (full URIs per table, pipeline/runs/publish.py) to every label
    table's Iceberg table; snapshot id per table. ``committed`` is filled as the commits land:
    per table, the files it now holds for the run (those with rows), so a caller whose later
    step fails knows what to undo (``withdraw_run``). ``check`` is called before each commit
    (the launcher's lease check)."""
    from schemas.tables import TABLES

    snapshots = {}
    for table, schema in TABLES.items():
        if snapshots:
            killpoint.reached("between-iceberg-commits")
        iceberg_table = ensure_table(catalog, namespace, table, schema)
        with_rows = files_with_rows(files.get(table, []), storage_options)
        if check is not None:
            check()
        snapshots[table] = commit_run(iceberg_table, run_id, with_rows, counts)
        if committed is not None:
            committed[table] = with_rows
        _LOG.info("Iceberg %s.%s: run %s committed as snapshot %d", namespace, table, run_id,
                  snapshots[table])
    return snapshots


def publish_custom_labels(catalog, namespace: str, classifier_id: str, run_id: str, files: list[str],
                          counts: dict[str, int], storage_options: dict | None = None) -> int:
    """Commit one classifier's custom_labels files of one scored run to ``<namespace>.custom_labels``
    (partitioned by classifier_id and run_id), replacing that partition's earlier files."""
    from schemas.custom_labels import CUSTOM_LABELS_SCHEMA

    table = ensure_table(catalog, namespace, "custom_labels", CUSTOM_LABELS_SCHEMA)
    if "classifier_id" not in {field.source_id and table.schema().find_column_name(field.source_id)
                               for field in table.spec().fields}:
        with table.update_spec() as spec:
            spec.add_identity("classifier_id")
        table = catalog.load_table(f"{namespace}.custom_labels")
    snapshot = commit_run(table, run_id, files_with_rows(files, storage_options), counts,
                          partition={"classifier_id": classifier_id})
    _LOG.info("Iceberg %s.custom_labels: classifier %s, run %s committed as snapshot %d", namespace,
              classifier_id, run_id, snapshot)
    return snapshot


def withdraw_run(catalog, namespace: str, run_id: str, committed: dict[str, list[str]],
                 restore: dict[str, list[str]], counts: dict | None = None) -> list[str]:
    """Undo ``publish_run``'s commits after a later step of the publication failed: each table in
    ``committed`` gets back ``restore``'s files for the run (what the run's manifest names, [] for
    a run never published), only where the run's files are still exactly the ones committed
    (never over a newer launcher's commit). Returns the tables rolled back. Raises when the
    catalog cannot be reached: then the files must stay where the tables point."""
    rolled = []
    for table, ours in committed.items():
        iceberg_table = catalog.load_table(f"{namespace}.{table}")
        if commit_run(iceberg_table, run_id, restore.get(table, []), counts, expect=ours,
                      action="rollback") is not None:
            rolled.append(table)
            _LOG.warning("Iceberg %s.%s: run %s's commit rolled back", namespace, table, run_id)
        else:
            _LOG.warning("Iceberg %s.%s: run %s was committed again since; not rolled back", namespace,
                         table, run_id)
    return rolled
