"""Bring the Iceberg tables back in line with the runs' manifests (reconciliation's Iceberg part).

The rule, per label table and run id: the table holds for the run exactly the files (with rows)
that the run's ``_MANIFEST.json`` names. So a table that committed an attempt whose manifest was
never written (its launcher killed between two table commits, or before the manifest) is rolled
back, and one that misses a published attempt's files (a rerun without ``--iceberg_catalog``, a
manifest written after a commit was undone) is rolled forward, each in one ``overwrite`` commit
marked ``audio-labelling.action = reconcile``. Runs that were never in the Iceberg tables and
whose manifests record no commit to them are left alone (``--iceberg_catalog`` is per run).

Used by pipeline/runs/reconcile.py through the two methods it needs, under the run id's lease.
"""
from __future__ import annotations

import logging

from pipeline.lakehouse.iceberg_commit import (
    bare_path, commit_run, files_with_rows, run_data_files)
from pipeline.runs.layout import PARTITION_KEY, TABLE_NAMES
from pipeline.runs.publish import output_uris

_LOG = logging.getLogger(__name__)


def _run_of(path: str) -> str | None:
    """The run id of a file from its partition folder (``.../run_id=<id>/part-...``)."""
    parent = path.rstrip("/").rsplit("/", 2)[-2] if path.count("/") >= 2 else ""
    return parent[len(PARTITION_KEY) + 1:] if parent.startswith(f"{PARTITION_KEY}=") else None


class IcebergAlignment:
    def __init__(self, catalog, namespace: str, output: str, storage_options: dict | None = None):
        self.catalog = catalog
        self.namespace = namespace
        self.output = output
        self.storage_options = storage_options
        self._seen: dict[str, dict[str, list[str]]] | None = None

    def _tables(self) -> dict:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        found = {}
        for name in TABLE_NAMES:
            try:
                found[name] = self.catalog.load_table(f"{self.namespace}.{name}")
            except (NoSuchTableError, NoSuchNamespaceError):
                continue
        return found

    def _under_output(self, table: str, path: str) -> bool:
        """Whether ``path`` lies in this output root's folder of ``table`` (``<output>/<table>/``, its
        ``run_id=`` folders): a catalog and namespace may be shared by several output roots, each
        reconciling only its own files (paths compared bare, as Iceberg's and the manifests' are)."""
        (folder,) = output_uris(self.output, [table], self.storage_options)
        return bare_path(path).startswith(bare_path(folder).rstrip("/") + "/")

    def run_ids(self) -> set[str]:
        """Run ids with files of this output root in any of the tables now: one scan plan per
        table, kept for the read-only ``disagreements`` that follow (``align`` reads the tables
        again). Files under other output roots sharing the catalog are not this root's to judge."""
        self._seen = {}
        for name, table in self._tables().items():
            by_run = self._seen.setdefault(name, {})
            if table.current_snapshot() is None:
                continue
            for task in table.scan().plan_files():
                if not self._under_output(name, task.file.file_path):
                    continue
                run_id = _run_of(task.file.file_path)
                if run_id is None:
                    _LOG.warning("Iceberg %s: data file %s is in no run_id= folder; left alone",
                                 table.name(), task.file.file_path)
                else:
                    by_run.setdefault(run_id, []).append(task.file.file_path)
        return {run_id for by_run in self._seen.values() for run_id in by_run}

    def _wanted(self, run_id: str, manifest: dict | None, table: str, current: list[str]) -> list[str] | None:
        """The files ``table`` should hold for the run (URIs), or None: leave the run alone."""
        if manifest is None:
            return []
        record = manifest.get("iceberg") or {}
        ours = record.get("namespace") == self.namespace
        if ours and isinstance(record.get("files"), dict):
            return output_uris(self.output, record["files"].get(table, []), self.storage_options)
        if not current and not ours:
            return None
        listed = output_uris(self.output, manifest.get("files", {}).get(table, []), self.storage_options)
        now = {bare_path(p) for p in current}
        missing = [p for p in listed if bare_path(p) not in now]
        if now <= {bare_path(p) for p in listed} and not files_with_rows(missing, self.storage_options):
            return current   # in line: Iceberg holds no file without rows
        return files_with_rows(listed, self.storage_options)

    def disagreements(self, run_id: str, manifest: dict | None,
                      tables: dict | None = None) -> dict[str, tuple[list[str], list[str]]]:
        """Per table where the run's files differ from the manifest's: (files now, files wanted).
        From what ``run_ids`` saw, unless ``tables`` (loaded now) are given."""
        if tables is None and self._seen is None:
            self.run_ids()
        found = {}
        names = tables if tables is not None else self._seen
        for name in names:
            current = ([f.file_path for f in run_data_files(tables[name], run_id)
                        if self._under_output(name, f.file_path)] if tables is not None
                       else self._seen[name].get(run_id, []))
            wanted = self._wanted(run_id, manifest, name, current)
            if wanted is not None and {bare_path(p) for p in current} != {bare_path(p) for p in wanted}:
                found[name] = (current, wanted)
        return found

    def align(self, run_id: str, manifest: dict | None, check=None) -> list[str]:
        """Commit, per table that disagrees, the manifest's files for the run (compare-and-set on
        what was read). ``check`` is called before each commit (the lease's). Returns the tables
        committed."""
        committed = []
        tables = self._tables()
        for name, (current, wanted) in self.disagreements(run_id, manifest, tables).items():
            if check is not None:
                check()
            counts = (manifest or {}).get("counts")
            if commit_run(tables[name], run_id, wanted, counts, expect=current, action="reconcile") is None:
                raise RuntimeError(f"Iceberg {self.namespace}.{name}: run {run_id} changed while it was "
                                   "being reconciled")
            _LOG.warning("Iceberg %s.%s: run %s %s to its manifest (%d file(s) -> %d)", self.namespace, name,
                         run_id, "rolled back" if manifest is None else "brought in line", len(current),
                         len(wanted))
            committed.append(name)
        return committed
