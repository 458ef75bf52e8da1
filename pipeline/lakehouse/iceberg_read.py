"""Read the label tables back from the Iceberg catalog runs were committed to. Beam-free.

One run: ``read_iceberg_table(catalog, ns, "clips", run_id="r7")`` scans that run's partition
(``run_id == 'r7'``), as the last commit of that run left it.

The archive: without a run id, ``clips`` gives the **current labels**: one row per ``clip_id``,
the one from the latest run that labelled it (latest ``labelled_at``; on a tie the greater
``run_id``). A nightly ``--skip_labelled`` job writes only new or changed clips each night, so
the current labels are spread over many runs; this rebuilds them. ``segments`` and ``errors``
without a run id are every run's rows; :func:`current_errors` narrows errors to the inputs that
are still not labelled.

The selection runs in pyarrow over the columns asked for; the archive's ``clips`` must fit in
memory (without ``scores``/``embedding``, a few hundred bytes per clip). For bigger archives, the
same rule as a query in DuckDB or Spark SQL is in docs/lakehouse.md.
"""
from __future__ import annotations

import datetime

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.lakehouse.iceberg_commit import RUN_ID_PROPERTY

# What decides "latest" for the current-labels view, in order.
CURRENT_KEY = ("clip_id", "labelled_at", "run_id")
_NEVER = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


def _stamp(value) -> datetime.datetime:
    """A comparable timestamp: a missing one is older than any."""
    if value is None:
        return _NEVER
    return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)


class IcebergReadError(LookupError):
    """The table or the run asked for is not in the catalog; the message says which."""


def load_label_table(catalog, namespace: str, table: str):
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    identifier = f"{namespace}.{table}"
    try:
        return catalog.load_table(identifier)
    except (NoSuchTableError, NoSuchNamespaceError) as e:
        raise IcebergReadError(f"no Iceberg table {identifier} in catalog {catalog.name}: has a run been "
                               f"committed with --iceberg_catalog {catalog.name} --iceberg_namespace "
                               f"{namespace}?") from e


def run_snapshot(iceberg_table, run_id: str):
    """The latest snapshot that committed run ``run_id`` (a rerun commits it again), or None."""
    found = [s for s in iceberg_table.snapshots() if s.summary is not None
             and s.summary.get(RUN_ID_PROPERTY) == run_id]
    return max(found, key=lambda s: (s.timestamp_ms, s.sequence_number or 0)) if found else None


def committed_runs(iceberg_table) -> list[str]:
    """Run ids committed to the table, oldest commit first (each once)."""
    runs = (s.summary.get(RUN_ID_PROPERTY) for s in iceberg_table.snapshots() if s.summary is not None)
    return list(dict.fromkeys(r for r in runs if r))


def current_rows(table: pa.Table) -> pa.Table:
    """One row per clip_id: the latest by labelled_at, ties broken by the greater run_id."""
    if table.num_rows == 0:
        return table
    keys = table.select(list(CURRENT_KEY)).append_column("_row", pa.array(range(table.num_rows), pa.int64()))
    order = keys.sort_by([("clip_id", "ascending"), ("labelled_at", "descending"),
                          ("run_id", "descending")])
    ids = order.column("clip_id")
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    keep = pa.concat_arrays([pa.array([True]), pc.fill_null(first, True).combine_chunks()])
    kept = order.column("_row").filter(keep)
    # In the scan's own row order: the view is the scan with the superseded rows left out.
    return table.take(kept.take(pc.sort_indices(kept)))


def read_iceberg_table(catalog, namespace: str, table: str, run_id: str | None = None,
                       columns: list[str] | None = None, all_runs: bool = False) -> pa.Table:
    """``<namespace>.<table>`` as one Arrow table: run ``run_id``'s rows, or without a run id the
    current labels (``clips``) / every run's rows (other tables, or ``clips`` with ``all_runs``).
    ``columns``: only these (those the table lacks are left out), e.g. never scores or embeddings
    for a report.

    Raises IcebergReadError when the table does not exist or ``run_id`` was never committed to it.
    """
    from pyiceberg.expressions import AlwaysTrue, EqualTo

    iceberg_table = load_label_table(catalog, namespace, table)
    names = [f.name for f in iceberg_table.schema().fields]
    wanted = None if columns is None else [c for c in columns if c in names]
    current = run_id is None and table == "clips" and not all_runs
    if run_id is not None and run_snapshot(iceberg_table, run_id) is None:
        known = committed_runs(iceberg_table)
        raise IcebergReadError(f"run {run_id!r} was never committed to {namespace}.{table} "
                               f"(committed runs: {', '.join(known[-10:]) or 'none'})")
    selected = wanted
    if wanted is not None and current:
        selected = wanted + [c for c in CURRENT_KEY if c not in wanted]
    scan = iceberg_table.scan(row_filter=EqualTo("run_id", run_id) if run_id is not None else AlwaysTrue(),
                              selected_fields=tuple(selected) if selected is not None else ("*",))
    rows = scan.to_arrow()
    if current:
        rows = current_rows(rows)
    return rows.select(wanted) if wanted is not None else rows


def current_errors(errors: pa.Table, clips: pa.Table) -> pa.Table:
    """The errors rows of inputs still not labelled: per (source_uri, clip_id) the latest error
    (by recorded_at, then run_id), dropped when ``clips`` (the current labels) holds a row for
    that input labelled at or after it. An input that failed on several nights counts once."""
    if errors.num_rows == 0:
        return errors
    labelled: dict[str, datetime.datetime] = {}
    when_labelled = [_stamp(t) for t in clips.column("labelled_at").to_pylist()]
    for column in ("clip_id", "source_uri"):
        if column not in clips.column_names:
            continue
        for key, when in zip(clips.column(column).to_pylist(), when_labelled):
            if key is not None and when >= labelled.get(key, _NEVER):
                labelled[key] = when
    latest: dict[tuple, int] = {}
    sources, ids = errors.column("source_uri").to_pylist(), errors.column("clip_id").to_pylist()
    stamps = [_stamp(t) for t in errors.column("recorded_at").to_pylist()]
    runs = errors.column("run_id").to_pylist()
    for i, key in enumerate(zip(sources, ids)):
        j = latest.get(key)
        if j is None or (stamps[i], runs[i] or "") > (stamps[j], runs[j] or ""):
            latest[key] = i
    kept = []
    for (source, clip_id), i in latest.items():
        input_key = clip_id if clip_id is not None else source
        if input_key not in labelled or labelled[input_key] < stamps[i]:
            kept.append(i)
    return errors.take(pa.array(sorted(kept), pa.int64()))


def open_catalog_for_reading(name: str, output: str | None = None):
    """The catalog ``name`` as pyiceberg's configuration defines it, else the embedded SQLite
    catalog of the local output root ``output`` (as ``--iceberg_catalog`` made it for a run
    there). Never creates one: reading an output that has no catalog is an error."""
    import os

    try:
        from pyiceberg.utils.config import Config
    except ImportError as e:
        raise IcebergReadError(f"reading Iceberg tables needs pyiceberg: pip install '.[iceberg]' ({e})") from e

    if Config().get_catalog_config(name):
        return _open(name, output or "")
    if output is None:
        # pyiceberg reads '_' in these variable names as '-', so they cannot name such a catalog.
        variables = (f" or PYICEBERG_CATALOG__{name.upper()}__*" if "_" not in name else
                     "; environment variables cannot name a catalog with '_'")
        raise IcebergReadError(f"catalog {name!r} is not configured (.pyiceberg.yaml{variables}); for the "
                               f"embedded catalog of a local output root, pass the runs' --output (report: --output "
                               f"ROOT; both tools: --iceberg_output ROOT)")
    if "://" in output and not output.startswith("file://"):
        return _open(name, output)   # its error says how to configure one
    database = os.path.join(os.path.abspath(output.removeprefix("file://")), "_iceberg", "catalog.db")
    if not os.path.isfile(database):
        raise IcebergReadError(f"catalog {name!r} is not configured and {output} has no embedded catalog "
                               f"({database} not found): was a run written there with --iceberg_catalog?")
    return _open(name, output)


def _open(name: str, output: str):
    from pipeline.lakehouse.iceberg_commit import open_catalog

    try:
        return open_catalog(name, output)
    except ValueError as e:   # IcebergSetupError, or pyiceberg's word on an incomplete configuration
        raise IcebergReadError(f"catalog {name!r}: {e}") from e
