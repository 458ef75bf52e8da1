"""``--where`` filters of a search, as masks over a partition's rows. Beam-free.

Each filter is ``key=value``; filters of one key are alternatives (OR), filters of different
keys must all hold (AND):

    label=NAME              the row's labels (the window's, or the clip's in a clips index) include NAME
    run_id=ID               rows of that run
    source_prefix=PREFIX    the clip's source URI starts with PREFIX
    time=START:END          the window overlaps START..END seconds of its source (either end may be empty)
    labelled_after=ISO      the clip was labelled at or after this UTC time (e.g. 2026-12-01T00:00)
    labelled_before=ISO     ... before this time
"""
from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KEYS = ("label", "run_id", "source_prefix", "time", "labelled_after", "labelled_before")


@dataclasses.dataclass(frozen=True)
class Where:
    labels: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()
    source_prefixes: tuple[str, ...] = ()
    spans: tuple[tuple[float | None, float | None], ...] = ()
    labelled_after: datetime.datetime | None = None
    labelled_before: datetime.datetime | None = None

    @property
    def empty(self) -> bool:
        return self == Where()

    @classmethod
    def parse(cls, filters: list[str] | tuple[str, ...] | None) -> "Where":
        values: dict[str, list[str]] = {}
        for text in filters or ():
            key, sep, value = text.partition("=")
            key = key.strip()
            if not sep or key not in KEYS or not value.strip():
                raise ValueError(f"--where {text!r}: expected KEY=VALUE with KEY one of {', '.join(KEYS)}")
            values.setdefault(key, []).append(value.strip())
        spans = tuple(_span(v) for v in values.get("time", []))
        return cls(labels=tuple(values.get("label", [])), run_ids=tuple(values.get("run_id", [])),
                   source_prefixes=tuple(values.get("source_prefix", [])), spans=spans,
                   labelled_after=_last_time(values.get("labelled_after"), "labelled_after"),
                   labelled_before=_last_time(values.get("labelled_before"), "labelled_before"))

    def admits_run(self, run_id: str) -> bool:
        return not self.run_ids or run_id in self.run_ids

    def mask(self, rows: pa.Table, clips: pa.Table) -> np.ndarray | None:
        """Boolean mask of the rows that pass (None: every row passes)."""
        n = rows.num_rows
        mask = np.ones(n, bool)
        if self.labels:
            labels = rows["labels"].combine_chunks() if isinstance(rows["labels"], pa.ChunkedArray) else rows["labels"]
            flat = pc.struct_field(labels.flatten(), "label")
            hit = pc.is_in(flat, value_set=pa.array(self.labels)).to_numpy(zero_copy_only=False)
            parents = pc.list_parent_indices(labels).to_numpy(zero_copy_only=False)
            has = np.zeros(n, bool)
            has[parents[hit]] = True
            mask &= has
        if self.source_prefixes:
            any_prefix = np.zeros(n, bool)
            for prefix in self.source_prefixes:
                any_prefix |= pc.starts_with(rows["source_uri"], prefix).to_numpy(zero_copy_only=False)
            mask &= any_prefix
        if self.spans:
            start = rows["start_seconds"].to_numpy()
            end = rows["end_seconds"].to_numpy()
            any_span = np.zeros(n, bool)
            for lo, hi in self.spans:
                any_span |= (end > (lo if lo is not None else -np.inf)) & (start < (hi if hi is not None else np.inf))
            mask &= any_span
        if self.labelled_after or self.labelled_before:
            positions = pc.index_in(rows["clip_id"], value_set=clips["clip_id"])
            at = pc.take(clips["labelled_at"], positions)
            ok = np.ones(n, bool)
            if self.labelled_after:
                ok &= pc.fill_null(pc.greater_equal(at, pa.scalar(self.labelled_after, at.type)), False).to_numpy(
                    zero_copy_only=False)
            if self.labelled_before:
                ok &= pc.fill_null(pc.less(at, pa.scalar(self.labelled_before, at.type)), False).to_numpy(
                    zero_copy_only=False)
            mask &= ok
        return None if mask.all() else mask


def _span(text: str) -> tuple[float | None, float | None]:
    lo, sep, hi = text.partition(":")
    try:
        span = (float(lo) if lo.strip() else None, float(hi) if hi.strip() else None)
    except ValueError:
        span = None
    if not sep or span is None or span == (None, None) or (None not in span and span[0] >= span[1]):
        raise ValueError(f"--where time={text!r}: expected START:END in seconds (START < END; one may be empty)")
    return span


def _last_time(values: list[str] | None, key: str) -> datetime.datetime | None:
    if not values:
        return None
    try:
        when = datetime.datetime.fromisoformat(values[-1])
    except ValueError as e:
        raise ValueError(f"--where {key}={values[-1]!r}: expected an ISO time, e.g. 2026-12-01T00:00") from e
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)
