"""Read a finished run's tables back, check that every input is accounted for, summarise."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TABLES
from transforms.io.storage import options_for_protocol, protocol_of


class AccountingError(RuntimeError):
    """Inputs were lost or duplicated: the run must not be trusted."""


def read_table(output: str, run_id: str, table: str, storage_options: dict | None = None,
               columns: list[str] | None = None) -> pa.Table:
    """All Parquet files of one table (any fsspec URL; storage_options as for --storage_options)."""
    url = f"{output.rstrip('/')}/{run_id}/{table}"
    fs, root = fsspec.core.url_to_fs(url, **options_for_protocol(storage_options or {}, protocol_of(url)))
    files = sorted(fs.glob(f"{root}/*.parquet"))
    if not files:
        empty = TABLES[table].empty_table()
        return empty.select(columns) if columns else empty
    return pa.concat_tables(pq.read_table(f, filesystem=fs, columns=columns) for f in files)


def read_run_tables(output: str, run_id: str,
                    storage_options: dict | None = None) -> tuple[pa.Table, pa.Table, pa.Table]:
    """clips, errors, and of segments (one row per window, can be large) only the clip ids."""
    return (read_table(output, run_id, "clips", storage_options),
            read_table(output, run_id, "errors", storage_options),
            read_table(output, run_id, "segments", storage_options, columns=["clip_id"]))


@dataclass
class RunSummary:
    run_id: str
    output: str
    discovered: int
    clips: pa.Table
    errors: pa.Table
    segments: pa.Table | None = None   # at least its clip_id column
    skipped: int = 0                   # labelled by an earlier run (--skip_labelled)
    seconds: float | None = None       # wall time of the run, launch to read-back
    windows_scored: int | None = None  # windows through inference, errored clips' included
    inference_batches: int | None = None
    shards_read: int = 0
    members_ignored: int = 0                       # non-audio members of shards (no rows)
    shards_by_worker: dict[int, int] = field(default_factory=dict)   # worker pid -> shards read

    def check_accounting(self) -> None:
        labelled, errored, skipped = self.clips.num_rows, self.errors.num_rows, self.skipped
        if labelled + errored + skipped != self.discovered:
            raise AccountingError(
                f"run {self.run_id}: {self.discovered} inputs discovered but {labelled} labelled + "
                f"{errored} errored + {skipped} skipped = {labelled + errored + skipped}")
        ids = self.clips.column("clip_id").to_pylist()
        if len(ids) != len(set(ids)):
            raise AccountingError(f"run {self.run_id}: duplicate clip ids in the clips table")
        if self.segments is not None:
            # Each labelled clip has exactly its num_windows segments; errored clips have none.
            per_clip = collections.Counter(self.segments.column("clip_id").to_pylist())
            expected = collections.Counter(dict(zip(ids, self.clips.column("num_windows").to_pylist())))
            if per_clip != expected:
                bad = sorted(k for k in set(per_clip) | set(expected) if per_clip[k] != expected[k])
                raise AccountingError(f"run {self.run_id}: segments rows do not match the clips' "
                                      f"num_windows for {len(bad)} clip(s), e.g. {bad[:3]}")

    def counts(self) -> dict:
        by_type = collections.Counter(
            f"{stage}/{kind}" for stage, kind in zip(self.errors.column("stage").to_pylist(),
                                                     self.errors.column("error_type").to_pylist()))
        return {"discovered": self.discovered, "labelled": self.clips.num_rows,
                "errored": self.errors.num_rows, "skipped": self.skipped,
                "errors_by_type": dict(sorted(by_type.items()))}

    def top_labels(self, n: int = 5) -> list[tuple[str, int]]:
        counts = collections.Counter(
            labels[0]["label"] for labels in self.clips.column("labels").to_pylist() if labels)
        return counts.most_common(n)

    def render(self) -> str:
        lines = [f"run {self.run_id} -> {self.output.rstrip('/')}/{self.run_id}/",
                 f"  inputs discovered: {self.discovered}",
                 f"  clips labelled:    {self.clips.num_rows}"
                 + (f" ({self.segments.num_rows} windows)" if self.segments is not None else "")]
        if self.windows_scored is not None and self.inference_batches is not None:
            lines.append(f"  windows scored:    {self.windows_scored} in {self.inference_batches} "
                         "inference batches")
        lines.append(f"  inputs errored:    {self.errors.num_rows}")
        if self.skipped:
            lines.append(f"  clips skipped:     {self.skipped} (labelled by an earlier run)")
        if self.seconds:
            windows = f", {self.windows_scored / self.seconds:.2f} windows/s" if self.windows_scored else ""
            lines.append(f"  throughput:        {self.clips.num_rows / self.seconds:.2f} clips/s{windows} "
                         f"over {self.seconds:.1f} s")
        for kind, n in self.counts()["errors_by_type"].items():
            lines.append(f"    {kind}: {n}")
        if self.shards_read:
            lines.append(f"  tar shards read:   {self.shards_read} (by worker pid: " + ", ".join(
                f"{pid}: {n}" for pid, n in sorted(self.shards_by_worker.items())) + ")")
            lines.append(f"  shard members ignored (not audio, not .json): {self.members_ignored}")
        if self.clips.num_rows:
            lines.append("  most frequent top label: " + ", ".join(
                f"{label} ({n})" for label, n in self.top_labels()))
        return "\n".join(lines)
