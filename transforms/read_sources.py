"""Beam glue: sources -> clips. Plain files pass through; shards are streamed member by member.

Runs after the Reshuffle that follows discovery, so shards spread over workers.
Each shard is read where it lands (its members are not reshuffled: they go on,
fused, to decoding in the same worker).

The run's accounting is data: ReadSources emits tallies (discovered, skipped, shards read,
members ignored, ...) on its 'tally' output, combined by transforms/run_stats.py. The counters
below are for progress and dashboards only. Counters, namespace audio_labelling:

* clips_skipped: discovered clips left out because --skip_labelled found them labelled.
* sources_unversioned: sources read under --skip_labelled whose store gave neither ETag nor
  mtime: never skipped (transforms/io/incremental.py UnversionedSources logs the first).
* inputs_discovered: +1 per plain file, +1 per audio member found in a shard,
  +1 per shard that fails (cannot be opened, breaks midway, holds no audio),
  matching its one error row. So discovered == labelled + errored stays exact.
* shards_read, shard_members_ignored (non-audio, non-sidecar members, see
  transforms/io/shards.py), shard_sidecars_invalid, shard_sidecars_late (a sidecar read
  after some of its sample's audio had been yielded without it), shard_reads_resumed.
* namespace audio_labelling.workers, shards_read_pid_<pid>: which worker process
  read how many shards (to see the spread over workers).
"""
from __future__ import annotations

import os

import apache_beam as beam

from transforms.elements import ClipSource, InputError
from transforms.io.names import record_name
from transforms.io.incremental import (
    CLIPS_COLUMNS, PreviousLabelling, UnversionedSources, is_real_version, iter_parquet_rows, labelling_key,
    previous_entry)
from transforms.io.shards import MAX_SAMPLE_BYTES, MemberProblem, ShardReader, ShardReadError
from transforms.io.storage import Storage, resolve_storage_options
from transforms.io.url_secrets import scrub_url
from transforms.progress import ProgressSettings
from transforms.run_stats import (
    DISCOVERED, MEMBERS_IGNORED, READS_RESUMED, SHARDS_BY_WORKER, SHARDS_READ, SHARDS_SKIPPED,
    SIDECARS_INVALID, SKIPPED, TALLY, keyed)

NAMESPACE = "audio_labelling"
SHARDS = "shards"   # output tag of the per-shard records
WORKERS_NAMESPACE = "audio_labelling.workers"
# Read-ahead of the shard stream (fsspec's readahead cache: one ranged GET per block). Peak
# memory grows with it (about 5 blocks on s3, see benchmarks/bench_shard_memory.py), not with
# the shard; 4 MiB keeps GETs few and the footprint a few tens of MB.
SHARD_BLOCK_SIZE = 4 << 20


def member_clip_id(shard_uri: str, member_name: str) -> str:
    """``<shard uri>#<member name>``: both as recorded (``member_name`` from record_name)."""
    return f"{scrub_url(shard_uri)}#{member_name}"


class ReadPreviousRuns(beam.DoFn):
    """A Parquet file of an earlier run -> keyed history entries for the join with this run's
    sources: ``clips`` files -> (source uri, (member, source version)) of the rows labelled the
    way this run labels (``fingerprint``, transforms/scoring/fingerprint.py); ``shards`` files (shard statistics) -> (shard uri,
    (version, audio members)) of complete reads. Streams the file a batch of rows at a time, so
    a worker's memory does not grow with the history.

    Rows of another fingerprint can never match this run (labelling_key), so they are dropped
    here, and the fingerprint is not sent with every entry (JoinPrevious puts it back): every
    entry crosses the runner's data plane and shuffle, and on the DirectRunner a worker's peak
    memory grows with the bytes it relays (benchmarks/bench_skip_history_memory.py)."""

    def __init__(self, kind: str, storage_options: dict | None = None, fingerprint: str | None = None):
        self._kind = kind
        self._storage_options = storage_options
        self._fingerprint = fingerprint
        self._storage = None

    def setup(self):
        self._storage = Storage(resolve_storage_options(self._storage_options))

    def process(self, uri: str):
        clips = self._kind == "clips"
        with self._storage.open(uri) as raw:
            for row in iter_parquet_rows(raw, CLIPS_COLUMNS if clips else None):
                if clips:
                    entry = previous_entry(row)
                    if entry is not None:
                        uri, (member, (fingerprint, version)) = entry
                        if fingerprint == self._fingerprint:
                            yield uri, (member, version)
                elif row["complete"] and row["source_version"]:
                    yield row["shard_uri"], (row["source_version"], row["audio_members"])


class JoinPrevious(beam.DoFn):
    """(source uri, {source: [SourceRef], labelled: [...], shards: [...]}) -> (SourceRef,
    PreviousLabelling): one source with what earlier runs know about it alone. URIs that only
    earlier runs know (not discovered this time) end here."""

    def __init__(self, fingerprint: str | None = None):
        self._fingerprint = fingerprint
        # How much history one source brought to its worker (dashboards, benchmarks): bounded by
        # the source's own members times its earlier labellings, not by the archive's history.
        self._held = beam.metrics.Metrics.distribution(NAMESPACE, "history_entries_per_source")

    def process(self, keyed):
        _, grouped = keyed
        sources = list(grouped["source"])
        if not sources:
            return
        # ReadPreviousRuns kept only this run's fingerprint's rows and sent their version alone.
        labelled = ((member, labelling_key(self._fingerprint, version))
                    for member, version in grouped["labelled"])
        known = PreviousLabelling.of(labelled, grouped["shards"])
        self._held.update(sum(len(keys) for keys in known.labelled.values()))
        for source in sources:   # discovery yields each URI once; more would each be read
            yield source, known


class ReadSources(beam.DoFn):
    """SourceRef (or (SourceRef, PreviousLabelling) with --skip_labelled) -> ClipSource, or an
    InputError on 'errors'. Tallies (transforms/run_stats.py) go to 'tally'; one record per tar
    shard (its version and audio member count) to 'shards'."""

    def __init__(self, storage_options: dict | None = None, fingerprint: str | None = None,
                 max_sample_bytes: int = MAX_SAMPLE_BYTES, progress: ProgressSettings | None = None):
        self._storage_options = storage_options
        self._progress_settings = progress or ProgressSettings()
        self._fingerprint = fingerprint
        self._max_sample_bytes = max_sample_bytes
        self._storage = None
        counter = beam.metrics.Metrics.counter
        self._discovered = counter(NAMESPACE, "inputs_discovered")
        self._shards = counter(NAMESPACE, "shards_read")
        self._ignored = counter(NAMESPACE, "shard_members_ignored")
        self._invalid_sidecars = counter(NAMESPACE, "shard_sidecars_invalid")
        self._late_sidecars = counter(NAMESPACE, "shard_sidecars_late")
        self._resumed = counter(NAMESPACE, "shard_reads_resumed")
        self._skipped = counter(NAMESPACE, "clips_skipped")
        self._shards_skipped = counter(NAMESPACE, "shards_skipped")
        self._unversioned = counter(NAMESPACE, "sources_unversioned")

    def setup(self):
        self._storage = Storage(resolve_storage_options(self._storage_options))
        self._progress = self._progress_settings.tally()

    def finish_bundle(self):
        self._progress.flush()

    def process(self, element):
        skipping = isinstance(element, tuple)   # --skip_labelled: joined with earlier runs
        source, known = element if skipping else (element, None)
        known = known or PreviousLabelling()
        # Recorded with every clip, so that a later --skip_labelled run can tell what changed.
        version = self._storage.version(source.location)
        key = labelling_key(self._fingerprint, version)
        if skipping and version is not None and not is_real_version(version):
            # Neither ETag nor mtime: a same-size rewrite would look unchanged, so never skipped.
            self._unversioned.inc()
            UnversionedSources.note(scrub_url(source.uri), version)
        if source.kind != "shard":
            self._discovered.inc()
            self._progress.add(discovered=1)
            yield _tally(DISCOVERED, 1)
            # The clip id is what is recorded: a presigned URL without its signature. The real
            # URL stays in source_uri, which is read (and scrubbed again when a row is made).
            clip_id = scrub_url(source.uri)
            if known.has(None, key):
                self._skipped.inc()
                self._progress.add(skipped=1, sources_done=1)
                yield _tally(SKIPPED, 1)
                return
            yield ClipSource(clip_id=clip_id, source_uri=source.uri, source_version=version, raw=source.raw)
            return
        members = known.whole_shard(self._fingerprint, version)
        if members is not None:
            # Unchanged, and every audio member labelled the same way before: not even opened.
            self._discovered.inc(members)
            self._skipped.inc(members)
            self._shards_skipped.inc()
            self._progress.add(discovered=members, skipped=members, sources_done=1)
            yield _tally(DISCOVERED, members)
            yield _tally(SKIPPED, members)
            yield _tally(SHARDS_SKIPPED, 1)
            yield beam.pvalue.TaggedOutput(SHARDS, shard_record(source.uri, version, members, True))
            return
        yield from self._read_shard(source, known, version, key)

    def _read_shard(self, source, known: PreviousLabelling, version: str | None, key):
        uri = source.uri   # as recorded; the shard is opened at its real location
        self._shards.inc()
        beam.metrics.Metrics.counter(WORKERS_NAMESPACE, f"shards_read_pid_{os.getpid()}").inc()
        reader = ShardReader(uri, lambda: self._storage.open(source.location, block_size=SHARD_BLOCK_SIZE),
                             policy=self._storage.policy, max_sample_bytes=self._max_sample_bytes)
        found = skipped = failed_whole = 0   # failed_whole: the shard's own error row (0 or 1)
        complete = False
        try:
            for item in reader:
                found += 1
                self._discovered.inc()
                self._progress.add(discovered=1, errors=int(isinstance(item, MemberProblem)))
                member = record_name(item.member_name)   # a name that is not UTF-8, escaped
                clip_id = member_clip_id(uri, member)
                if isinstance(item, MemberProblem):
                    yield beam.pvalue.TaggedOutput("errors", InputError(
                        clip_id, "read", item.error_type, item.message, clip_id=clip_id,
                        shard_uri=uri, member_name=member))
                elif known.has(member, key):
                    self._skipped.inc()   # same shard content, labelled before: not again
                    skipped += 1
                else:
                    yield ClipSource(clip_id=clip_id, source_uri=clip_id, shard_uri=scrub_url(uri),
                                     member_name=member, meta=item.meta, data=item.data,
                                     source_version=version)
            complete = True
        except ShardReadError as e:
            self._discovered.inc()
            found += 1
            failed_whole = 1
            yield beam.pvalue.TaggedOutput("errors", InputError(
                uri, "read", type(e.cause).__name__, record_name(str(e))[:2000], shard_uri=uri))
        else:
            if not found:
                self._discovered.inc()
                found += 1
                failed_whole = 1
                yield beam.pvalue.TaggedOutput("errors", InputError(
                    uri, "read", "NoAudioMembers",
                    f"shard holds no audio members ({reader.stats.members} members, "
                    f"{reader.stats.ignored} ignored)", shard_uri=uri))
        finally:
            self._progress.add(discovered=failed_whole, errors=failed_whole, skipped=skipped, sources_done=1)
            self._ignored.inc(reader.stats.ignored)
            self._invalid_sidecars.inc(reader.stats.sidecars_invalid)
            self._late_sidecars.inc(reader.stats.sidecars_late)
            self._resumed.inc(reader.stats.resumed)
        yield _tally(DISCOVERED, found)
        yield _tally(SKIPPED, skipped)
        yield _tally(SHARDS_READ, 1)
        yield _tally(keyed(SHARDS_BY_WORKER, os.getpid()), 1)
        yield _tally(MEMBERS_IGNORED, reader.stats.ignored)
        yield _tally(SIDECARS_INVALID, reader.stats.sidecars_invalid)
        yield _tally(READS_RESUMED, reader.stats.resumed)
        yield beam.pvalue.TaggedOutput(SHARDS, shard_record(uri, version, reader.stats.audio,
                                                            complete and reader.stats.audio > 0))


def _tally(name: str, n):
    return beam.pvalue.TaggedOutput(TALLY, (name, n))


def shard_record(uri: str, version: str | None, audio_members: int, complete: bool) -> dict:
    """A row of the run's shard statistics (schemas/tables.py SHARD_STATS_SCHEMA)."""
    return {"shard_uri": scrub_url(uri), "source_version": version, "audio_members": audio_members,
            "complete": complete}
