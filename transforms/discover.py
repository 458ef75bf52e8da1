"""Beam glue: --input patterns and --input_manifest files -> sources (plain files and shards).

Counting (the run's accounting is inputs_discovered == clips labelled + errored):
discovery counts only what fails here (a pattern matching nothing, an unusable
manifest or manifest entry); sources are counted when they are opened, by
ReadSources: a plain file as one input, a shard as its audio members.
"""
from __future__ import annotations

import apache_beam as beam

from transforms.elements import DiscoveryRequest, InputError
from transforms.io.sources import Discovery
from transforms.io.storage import Storage, resolve_storage_options
from transforms.progress import ProgressSettings
from transforms.run_stats import FILES_PASSED_OVER, TALLY, keyed

NAMESPACE = "audio_labelling"


class DiscoverSources(beam.DoFn):
    """DiscoveryRequest -> SourceRef, or an InputError on the 'errors' output; tallies of what
    scans passed over on the 'tally' output (transforms/run_stats.py)."""

    def __init__(self, storage_options: dict | None = None, progress: ProgressSettings | None = None):
        self._storage_options = storage_options   # public part only; secrets come from the env
        self._progress_settings = progress or ProgressSettings()
        self._storage = None
        self._discovered = beam.metrics.Metrics.counter(NAMESPACE, "inputs_discovered")
        self._duplicates = beam.metrics.Metrics.counter(NAMESPACE, "inputs_duplicate_skipped")
        self._sources = beam.metrics.Metrics.counter(NAMESPACE, "sources_discovered")

    def setup(self):
        self._storage = Storage(resolve_storage_options(self._storage_options))
        self._progress = self._progress_settings.tally()

    def process(self, request: DiscoveryRequest):
        discovery = Discovery(self._storage, request)
        for item in discovery:
            if isinstance(item, InputError):
                self._discovered.inc()
                self._progress.add(discovered=1, errors=1)
                yield beam.pvalue.TaggedOutput("errors", item)
            else:
                self._sources.inc()
                self._progress.add(sources_found=1)
                yield item
        self._duplicates.inc(discovery.duplicates)
        # What directory scans left out (not audio, not shards), by kind: in the summary and the
        # manifest, never dropped in silence.
        for kind, n in sorted(discovery.passed_over.items()):
            yield beam.pvalue.TaggedOutput(TALLY, (keyed(FILES_PASSED_OVER, kind), n))
        # From here the launcher knows how many sources there are: it can give an ETA.
        self._progress.add(discovery_done=1)
        self._progress.flush()
