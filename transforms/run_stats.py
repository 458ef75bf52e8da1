"""Beam glue: the run's own tallies, as data, combined into one small record per run.

The launcher checks ``discovered == labelled + errored + skipped`` and prints its summary from
this record alone. Metrics cannot do that job: Flink's and Spark's job servers report attempted
values only, and attempted counters count a retried bundle twice. Data outputs of a retried
bundle are committed once, so tallies carried as elements are exact on every runner.

A tally is ``(name, int)``; an example is ``(name, str)`` (a few clip ids kept to name what a
failed check found). Stages emit them on a ``tally`` output or they are derived from the rows
(:func:`row_tallies`); :class:`CombineRunStats` folds them into one dict (combiner lifting keeps
the traffic to one partial dict per bundle).
"""
from __future__ import annotations

import collections
import json

import apache_beam as beam

from transforms.write_tables import carrying_filesystem_settings

TALLY = "tally"
STATS_VERSION = 1

# Counts (see README "Trust"): every discovered input is labelled, errored or skipped, once.
DISCOVERED, LABELLED, ERRORED, SKIPPED = "discovered", "labelled", "errored", "skipped"
SOURCES = "sources"                      # files and shards found by discovery
SHARDS_READ, SHARDS_SKIPPED = "shards_read", "shards_skipped"
MEMBERS_IGNORED = "members_ignored"      # shard members that are neither audio nor .json
SIDECARS_INVALID, READS_RESUMED = "sidecars_invalid", "shard_reads_resumed"
WINDOWS_SCORED, INFERENCE_BATCHES = "windows_scored", "inference_batches"
SEGMENT_ROWS, NUM_WINDOWS_TOTAL = "segment_rows", "num_windows_total"
CLIP_IDS_DUPLICATED, SEGMENTS_MISMATCHED = "clip_ids_duplicated", "clips_segments_mismatched"
AUDIO_MILLISECONDS = "audio_milliseconds"          # decoded audio of the labelled clips
CLIPS_WITHOUT_LABELS = "clips_without_labels"      # labelled, but no label passed the selection
# Keyed families: "<family>/<key>".
ERRORS_BY_TYPE, TOP_LABELS, SHARDS_BY_WORKER = "errors_by_type", "top_labels", "shards_read_by_worker"
FILES_PASSED_OVER = "files_passed_over"  # what directory scans left out, by extension or kind
_FAMILIES = (ERRORS_BY_TYPE, TOP_LABELS, SHARDS_BY_WORKER, FILES_PASSED_OVER)
MAX_EXAMPLES = 3


def keyed(family: str, key) -> str:
    return f"{family}/{key}"


class CombineRunStats(beam.CombineFn):
    """(name, int | str) tallies -> {"counts": {...}, "<family>": {...}, "examples": {...}}."""

    def create_accumulator(self):
        return collections.Counter(), {}

    def add_input(self, acc, tally):
        counts, examples = acc
        name, value = tally
        if isinstance(value, str):
            kept = examples.setdefault(name, [])
            if len(kept) < MAX_EXAMPLES:
                kept.append(value)
        else:
            counts[name] += value
        return acc

    def merge_accumulators(self, accs):
        counts, examples = collections.Counter(), {}
        for c, e in accs:
            counts.update(c)
            for name, values in e.items():
                kept = examples.setdefault(name, [])
                kept.extend(values[:MAX_EXAMPLES - len(kept)])
        return counts, examples

    def extract_output(self, acc):
        counts, examples = acc
        out = {"stats_version": STATS_VERSION, "counts": {}, "examples": {k: sorted(v) for k, v in examples.items()}}
        for family in _FAMILIES:
            out[family] = {}
        for name, n in sorted(counts.items()):
            family, _, key = name.partition("/")
            if key and family in _FAMILIES:
                out[family][key] = n
            else:
                out["counts"][name] = n
        return out


def count_as(name: str):
    """A Map that turns each element into one tally of ``name``."""
    return beam.Map(lambda _, n=name: (n, 1))


def clip_row_tallies(row: dict):
    yield LABELLED, 1
    yield NUM_WINDOWS_TOTAL, row.get("num_windows") or 0
    yield AUDIO_MILLISECONDS, round((row.get("duration_seconds") or 0.0) * 1000)
    labels = row.get("labels")
    if labels:
        yield keyed(TOP_LABELS, labels[0]["label"]), 1
    else:
        yield CLIPS_WITHOUT_LABELS, 1


def error_row_tallies(row: dict):
    yield ERRORED, 1
    yield keyed(ERRORS_BY_TYPE, f"{row['stage']}/{row['error_type']}"), 1


def check_clip_segments(keyed_group):
    """(clip_id, {clips: [num_windows...], segments: [count...]}) -> tallies of what is wrong:
    a clip id labelled twice, or segments rows that do not match the clip's num_windows."""
    clip_id, grouped = keyed_group
    windows = list(grouped["clips"])
    segments = sum(grouped["segments"])
    if len(windows) > 1:
        yield CLIP_IDS_DUPLICATED, 1
        yield CLIP_IDS_DUPLICATED, clip_id
    if segments != (windows[0] if windows else 0):
        yield SEGMENTS_MISMATCHED, 1
        yield SEGMENTS_MISMATCHED, clip_id


class RunStats(beam.PTransform):
    """{"tallies", "clips", "segments", "errors"} PCollections -> one JSON file at ``path``.

    ``tallies``: what the stages emitted; the rest are the rows written to the tables."""

    def __init__(self, path: str, filesystem_settings=None):
        super().__init__()
        self._path = path
        self._settings = filesystem_settings or {}

    def expand(self, pcolls):
        tallies, clips = pcolls["tallies"], pcolls["clips"]
        segments, errors = pcolls["segments"], pcolls["errors"]
        per_clip = (
            {"clips": clips | "ClipWindows" >> beam.Map(lambda r: (r["clip_id"], r["num_windows"] or 0)),
             "segments": (segments | "SegmentOfClip" >> beam.Map(lambda r: (r["clip_id"], 1))
                          | "SegmentsPerClip" >> beam.CombinePerKey(sum))}
            | "JoinClipSegments" >> beam.CoGroupByKey()
            | "CheckClipSegments" >> beam.FlatMap(check_clip_segments))
        return (
            (tallies,
             clips | "ClipTallies" >> beam.FlatMap(clip_row_tallies),
             segments | "SegmentTallies" >> count_as(SEGMENT_ROWS),
             errors | "ErrorTallies" >> beam.FlatMap(error_row_tallies),
             per_clip)
            | "AllTallies" >> beam.Flatten()
            | "Combine" >> beam.CombineGlobally(CombineRunStats())
            | "ToJson" >> beam.Map(lambda stats: json.dumps(stats, sort_keys=True))
            | "Write" >> carrying_filesystem_settings(
                beam.io.WriteToText(self._path, num_shards=1, shard_name_template=""), self._settings))
