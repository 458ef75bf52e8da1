"""What earlier runs already labelled, per source: the --skip_labelled decisions. Beam-free.

Earlier runs' clips rows and per-shard statistics are joined with this run's sources by source
URI (a plain file's URI, a shard's URI), so a worker only ever holds what earlier runs know
about the one source it is reading, never the whole history.

"Labelled the same way" is decided by one function, :func:`labelling_key`: the same labelling
fingerprint (transforms/scoring/fingerprint.py: weights, config, features, window and hop,
aggregation, activation, label selection, optional outputs, schema version) over the same real
source version (an ETag, or size and a modification time). A source whose store reports neither
ETag nor mtime has no real version (a same-size rewrite would look unchanged), so it is never
skipped: :func:`labelling_key` gives it no key, and :class:`UnversionedSources` says so once per
worker process.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

# Columns of the clips table the join reads.
# Files of runs older than schema version 5 lack labelling_fingerprint: the Parquet reader leaves
# a missing column out, so their rows carry no fingerprint and never match (they are relabelled).
CLIPS_COLUMNS = ["clip_id", "shard_uri", "member_name", "source_version", "labelling_fingerprint"]
# Rows turned into Python values at a time: a worker's memory for reading history is what the
# Parquet reader holds for one row group of these columns plus this many rows as Python values,
# however many rows the file or the history holds.
HISTORY_BATCH_ROWS = 1024
# Bound on the Arrow bytes of one row group of the clips table the pipeline writes
# (pipeline/launch/build.py, Beam's WriteToParquet row_group_buffer_size; Beam's default is 64 MiB).
# --skip_labelled workers read earlier runs' clips files one row group at a time, and the Parquet
# reader's footprint grows with the row group's rows (measured with pyarrow 25 on the join's
# columns, one thread, 1024-row batches: a file of one 50 000-row group raised peak RSS by 33 MB,
# 100 000 rows in 10 000-row groups by 19 MB). 4 MiB is ~10 000 rows without scores or
# embeddings, fewer with them; it also bounds what the writer buffers.
CLIPS_ROW_GROUP_BYTES = 4 << 20


_LOG = logging.getLogger(__name__)


def is_real_version(source_version: str | None) -> bool:
    """Whether a source version (transforms/io/storage.py Storage.version) can tell a rewrite:
    an ETag, or a modification time next to the size. ``size:N;mtime:None`` cannot."""
    if not source_version:
        return False
    if source_version.startswith("etag:"):
        return len(source_version) > len("etag:")
    fields = dict(part.split(":", 1) for part in source_version.split(";") if ":" in part)
    return fields.get("mtime") not in (None, "", "None")


def labelling_key(fingerprint: str | None, source_version: str | None) -> tuple[str, str] | None:
    """Two labellings of a clip are the same when their keys are equal. None: never the same
    (no fingerprint: a row of an older schema; no real version: a source that cannot be told
    unchanged)."""
    if not fingerprint or not is_real_version(source_version):
        return None
    return (fingerprint, source_version)


class UnversionedSources:
    """Sources read under --skip_labelled that have no real version (always relabelled): one
    warning per process, at the first such source, with its URI as an example; the count
    goes to the caller's counter (transforms/read_sources.py, ``sources_unversioned``)."""

    _lock = threading.Lock()
    _warned = False

    @classmethod
    def note(cls, uri: str, version: str | None) -> bool:
        """Records one such source; True when this call logged the warning."""
        with cls._lock:
            if cls._warned:
                return False
            cls._warned = True
        _LOG.warning("--skip_labelled: %s has no ETag and no modification time (version %r), so it "
                     "cannot be told unchanged and is labelled again on every run; so is every such "
                     "source (counter audio_labelling/sources_unversioned counts them; this is logged "
                     "once per worker process)", uri, version)
        return True

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._warned = False


def source_key(row: dict) -> str:
    """The source a clips row came from: its shard, or the plain file (its clip id)."""
    return row.get("shard_uri") or row["clip_id"]


def previous_entry(row: dict) -> tuple[str, tuple[str | None, tuple[str, str]]] | None:
    """(source URI, (member name or None, labelling key)) of an earlier clips row, or None when
    that row can never match (no real version, or no fingerprint: an older schema)."""
    key = labelling_key(row.get("labelling_fingerprint"), row.get("source_version"))
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

    def whole_shard(self, fingerprint: str, version: str | None) -> int | None:
        """Member count of a shard whose every audio member (at this version) was labelled the
        same way, so it need not be read at all; None when it must be read. A shard with a
        member that errored, was never labelled, or whose member count is unknown (no complete
        read of this version recorded) is read."""
        key = labelling_key(fingerprint, version)
        members = self.shard_members.get(version) if key is not None else None
        if not members:
            return None
        done = sum(1 for name, keys in self.labelled.items() if name is not None and key in keys)
        return members if done >= members else None
