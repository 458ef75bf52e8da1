"""Read a finished run's tables back, check that every input is accounted for, summarise."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TABLES
from transforms.storage import options_for_protocol, protocol_of


class AccountingError(RuntimeError):
    """Inputs were lost or duplicated: the run must not be trusted."""


def read_table(output: str, run_id: str, table: str, storage_options: dict | None = None) -> pa.Table:
    """All Parquet files of one table (any fsspec URL; storage_options as for --storage_options)."""
    url = f"{output.rstrip('/')}/{run_id}/{table}"
    fs, root = fsspec.core.url_to_fs(url, **options_for_protocol(storage_options or {}, protocol_of(url)))
    files = sorted(fs.glob(f"{root}/*.parquet"))
    if not files:
        return TABLES[table].empty_table()
    return pa.concat_tables(pq.read_table(f, filesystem=fs) for f in files)


def read_run_tables(output: str, run_id: str,
                    storage_options: dict | None = None) -> tuple[pa.Table, pa.Table]:
    return (read_table(output, run_id, "clips", storage_options),
            read_table(output, run_id, "errors", storage_options))


@dataclass
class RunSummary:
    run_id: str
    output: str
    discovered: int
    clips: pa.Table
    errors: pa.Table
    shards_read: int = 0
    members_ignored: int = 0                       # non-audio members of shards (no rows)
    shards_by_worker: dict[int, int] = field(default_factory=dict)   # worker pid -> shards read

    def check_accounting(self) -> None:
        labelled, errored = self.clips.num_rows, self.errors.num_rows
        if labelled + errored != self.discovered:
            raise AccountingError(
                f"run {self.run_id}: {self.discovered} inputs discovered but {labelled} labelled + "
                f"{errored} errored = {labelled + errored}")
        ids = self.clips.column("clip_id").to_pylist()
        if len(ids) != len(set(ids)):
            raise AccountingError(f"run {self.run_id}: duplicate clip ids in the clips table")

    def top_labels(self, n: int = 5) -> list[tuple[str, int]]:
        counts = collections.Counter(
            labels[0]["label"] for labels in self.clips.column("labels").to_pylist() if labels)
        return counts.most_common(n)

    def render(self) -> str:
        lines = [f"run {self.run_id} -> {self.output.rstrip('/')}/{self.run_id}/",
                 f"  inputs discovered: {self.discovered}",
                 f"  clips labelled:    {self.clips.num_rows}",
                 f"  inputs errored:    {self.errors.num_rows}"]
        by_type = collections.Counter(
            zip(self.errors.column("stage").to_pylist(), self.errors.column("error_type").to_pylist()))
        for (stage, kind), n in sorted(by_type.items()):
            lines.append(f"    {stage}/{kind}: {n}")
        if self.shards_read:
            lines.append(f"  tar shards read:   {self.shards_read} (by worker pid: " + ", ".join(
                f"{pid}: {n}" for pid, n in sorted(self.shards_by_worker.items())) + ")")
            lines.append(f"  shard members ignored (not audio, not .json): {self.members_ignored}")
        if self.clips.num_rows:
            lines.append("  most frequent top label: " + ", ".join(
                f"{label} ({n})" for label, n in self.top_labels()))
        return "\n".join(lines)
