"""Beam glue: sources -> clips. Plain files pass through; shards are streamed member by member.

Runs after the Reshuffle that follows discovery, so shards spread over workers.
Each shard is read where it lands (its members are not reshuffled: they go on,
fused, to decoding in the same worker). Counters, namespace audio_labelling:

* clips_skipped: discovered clips left out because --skip_labelled found them labelled.
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

from transforms.elements import ClipSource, InputError, SourceRef
from transforms.io.shards import MAX_SAMPLE_BYTES, MemberProblem, ShardReader, ShardReadError
from transforms.io.storage import Storage, resolve_storage_options
from transforms.io.url_secrets import scrub_url

NAMESPACE = "audio_labelling"
WORKERS_NAMESPACE = "audio_labelling.workers"
# Read-ahead of the shard stream (fsspec's readahead cache: one ranged GET per block). Peak
# memory grows with it (about 5 blocks on s3, see benchmarks/bench_shard_memory.py), not with
# the shard; 4 MiB keeps GETs few and the footprint a few tens of MB.
SHARD_BLOCK_SIZE = 4 << 20


def member_clip_id(shard_uri: str, member_name: str) -> str:
    return f"{scrub_url(shard_uri)}#{member_name}"


class ReadSources(beam.DoFn):
    """SourceRef -> ClipSource, or an InputError on the 'errors' output."""

    def __init__(self, storage_options: dict | None = None, max_sample_bytes: int = MAX_SAMPLE_BYTES):
        self._storage_options = storage_options
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

    def setup(self):
        self._storage = Storage(resolve_storage_options(self._storage_options))

    def process(self, source: SourceRef, labelled: dict | None = None):
        """``labelled``: clip id -> source version of clips a finished earlier run labelled with
        this model (--skip_labelled); such clips are counted as skipped and not read again."""
        labelled = labelled or {}
        # Recorded with every clip, so that a later --skip_labelled run can tell what changed.
        version = self._storage.version(source.uri)
        if source.kind != "shard":
            self._discovered.inc()
            # The clip id is what is recorded: a presigned URL without its signature. The real
            # URL stays in source_uri, which is read (and scrubbed again when a row is made).
            clip_id = scrub_url(source.uri)
            if version is not None and labelled.get(clip_id) == version:
                self._skipped.inc()
                return
            yield ClipSource(clip_id=clip_id, source_uri=source.uri, source_version=version)
            return
        yield from self._read_shard(source.uri, labelled, version)

    def _read_shard(self, uri: str, labelled: dict | None = None, version: str | None = None):
        labelled = labelled or {}
        self._shards.inc()
        beam.metrics.Metrics.counter(WORKERS_NAMESPACE, f"shards_read_pid_{os.getpid()}").inc()
        reader = ShardReader(uri, lambda: self._storage.open(uri, block_size=SHARD_BLOCK_SIZE),
                             policy=self._storage.policy, max_sample_bytes=self._max_sample_bytes)
        found = 0
        try:
            for item in reader:
                found += 1
                self._discovered.inc()
                clip_id = member_clip_id(uri, item.member_name)
                if isinstance(item, MemberProblem):
                    yield beam.pvalue.TaggedOutput("errors", InputError(
                        clip_id, "read", item.error_type, item.message, clip_id=clip_id,
                        shard_uri=uri, member_name=item.member_name))
                elif version is not None and labelled.get(clip_id) == version:
                    self._skipped.inc()   # same shard content, labelled before: not again
                else:
                    yield ClipSource(clip_id=clip_id, source_uri=clip_id, shard_uri=scrub_url(uri),
                                     member_name=item.member_name, meta=item.meta, data=item.data,
                                     source_version=version)
        except ShardReadError as e:
            self._discovered.inc()
            yield beam.pvalue.TaggedOutput("errors", InputError(
                uri, "read", type(e.cause).__name__, str(e)[:2000], shard_uri=uri))
        else:
            if not found:
                self._discovered.inc()
                yield beam.pvalue.TaggedOutput("errors", InputError(
                    uri, "read", "NoAudioMembers",
                    f"shard holds no audio members ({reader.stats.members} members, "
                    f"{reader.stats.ignored} ignored)", shard_uri=uri))
        finally:
            self._ignored.inc(reader.stats.ignored)
            self._invalid_sidecars.inc(reader.stats.sidecars_invalid)
            self._late_sidecars.inc(reader.stats.sidecars_late)
            self._resumed.inc(reader.stats.resumed)
