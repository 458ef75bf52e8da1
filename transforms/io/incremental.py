"""What earlier runs already labelled, per source: the --skip_labelled decisions. Beam-free.

Earlier runs' clips rows and per-shard statistics are joined with this run's sources by source
URI (a plain file's URI, a shard's URI), so a worker only ever holds what earlier runs know
about the one source it is reading, never the whole history.

"Labelled the same way" is decided by one function, :func:`labelling_key`: today the same model
weights (SHA-256 of model.safetensors) over the same source version (ETag, or size and mtime).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

# Columns of the clips table the join reads.
CLIPS_COLUMNS = ["clip_id", "shard_uri", "member_name", "source_version", "model_sha256"]
# Rows turned into Python values at a time: a worker's memory for reading history is what the
# Parquet reader holds for one row group of these columns plus this many rows as Python values,
# however many rows the file or the history holds.
HISTORY_BATCH_ROWS = 1024
# Bound on the Arrow bytes of one row group of the clips table the pipeline writes
# (pipeline/build.py, Beam's WriteToParquet row_group_buffer_size; Beam's default is 64 MiB).
# --skip_labelled workers read earlier runs' clips files one row group at a time, and the Parquet
# reader's footprint grows with the row group's rows (measured with pyarrow 25 on the join's
# columns, one thread, 1024-row batches: a file of one 50 000-row group raised peak RSS by 33 MB,
# 100 000 rows in 10 000-row groups by 19 MB). 4 MiB is ~10 000 rows without scores or
# embeddings, fewer with them; it also bounds what the writer buffers.
CLIPS_ROW_GROUP_BYTES = 4 << 20


def labelling_key(model_sha256: str | None, source_version: str | None) -> tuple[str, str] | None:
    """Two labellings of a clip are the same when their keys are equal. None: never the same
    (a source without a version cannot be told unchanged)."""
    if not model_sha256 or not source_version:
        return None
    return (model_sha256, source_version)


def source_key(row: dict) -> str:
    """The source a clips row came from: its shard, or the plain file (its clip id)."""
    return row.get("shard_uri") or row["clip_id"]


def previous_entry(row: dict) -> tuple[str, tuple[str | None, tuple[str, str]]] | None:
    """(source URI, (member name or None, labelling key)) of an earlier clips row, or None when
    that row can never match (no version or no model)."""
    key = labelling_key(row.get("model_sha256"), row.get("source_version"))
    if key is None:
        return None
    return source_key(row), (row.get("member_name") if row.get("shard_uri") else None, key)


def iter_parquet_rows(raw: BinaryIO, columns: list[str] | None,
                      batch_rows: int = HISTORY_BATCH_ROWS) -> Iterator[dict]:
    """The rows of one Parquet file, ``batch_rows`` at a time (only ``columns``)."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(raw)
    # One decoding thread: a handful of small string columns gains little from more, and the
    # threaded reader raised peak RSS by 8-10 MB more per file (measured, pyarrow 25).
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
        yield from batch.to_pylist()


@dataclass
class PreviousLabelling:
    """What finished earlier runs know about one source.

    ``labelled``: member name (None for a plain file) -> labelling keys it was labelled under.
    ``shard_members``: shard version -> audio members a complete read of that version found.
    """
    labelled: dict[str | None, set] = field(default_factory=dict)
    shard_members: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, entries, shard_records=()) -> "PreviousLabelling":
        known = cls()
        for member, key in entries:
            known.labelled.setdefault(member, set()).add(tuple(key))
        for version, members in shard_records:
            known.shard_members[version] = members
        return known

    def has(self, member: str | None, key: tuple[str, str] | None) -> bool:
        return key is not None and key in self.labelled.get(member, ())

    def whole_shard(self, model_sha256: str, version: str | None) -> int | None:
        """Member count of a shard whose every audio member (at this version) was labelled the
        same way, so it need not be read at all; None when it must be read. A shard with a
        member that errored, was never labelled, or whose member count is unknown (no complete
        read of this version recorded) is read."""
        key = labelling_key(model_sha256, version)
        members = self.shard_members.get(version) if key is not None else None
        if not members:
            return None
        done = sum(1 for name, keys in self.labelled.items() if name is not None and key in keys)
        return members if done >= members else None
