"""Read a finished run's tables back, check that every input is accounted for, summarise."""
from __future__ import annotations

import collections
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TABLES


class AccountingError(RuntimeError):
    """Inputs were lost or duplicated: the run must not be trusted."""


def read_table(output: str, run_id: str, table: str) -> pa.Table:
    fs, root = fsspec.core.url_to_fs(f"{output.rstrip('/')}/{run_id}/{table}")
    files = sorted(fs.glob(f"{root}/*.parquet"))
    if not files:
        return TABLES[table].empty_table()
    return pa.concat_tables(pq.read_table(f, filesystem=fs) for f in files)


def read_run_tables(output: str, run_id: str) -> tuple[pa.Table, pa.Table]:
    return read_table(output, run_id, "clips"), read_table(output, run_id, "errors")


@dataclass
class RunSummary:
    run_id: str
    output: str
    discovered: int
    clips: pa.Table
    errors: pa.Table

    def check_accounting(self) -> None:
        labelled, errored = self.clips.num_rows, self.errors.num_rows
        if labelled + errored != self.discovered:
            raise AccountingError(
                f"run {self.run_id}: {self.discovered} inputs discovered but {labelled} labelled + "
                f"{errored} errored = {labelled + errored}")
        ids = self.clips.column("clip_id").to_pylist()
        if len(ids) != len(set(ids)):
            raise AccountingError(f"run {self.run_id}: duplicate clip ids in the clips table")

    def counts(self) -> dict:
        by_type = collections.Counter(
            f"{stage}/{kind}" for stage, kind in zip(self.errors.column("stage").to_pylist(),
                                                     self.errors.column("error_type").to_pylist()))
        return {"discovered": self.discovered, "labelled": self.clips.num_rows,
                "errored": self.errors.num_rows, "errors_by_type": dict(sorted(by_type.items()))}

    def top_labels(self, n: int = 5) -> list[tuple[str, int]]:
        counts = collections.Counter(
            labels[0]["label"] for labels in self.clips.column("labels").to_pylist() if labels)
        return counts.most_common(n)

    def render(self) -> str:
        lines = [f"run {self.run_id} -> {self.output.rstrip('/')}/{self.run_id}/",
                 f"  inputs discovered: {self.discovered}",
                 f"  clips labelled:    {self.clips.num_rows}",
                 f"  inputs errored:    {self.errors.num_rows}"]
        for kind, n in self.counts()["errors_by_type"].items():
            lines.append(f"    {kind}: {n}")
        if self.clips.num_rows:
            lines.append("  most frequent top label: " + ", ".join(
                f"{label} ({n})" for label, n in self.top_labels()))
        return "\n".join(lines)
