"""Beam glue: read one audio URI and stream its windows' model input features.

The streaming decode, resampling and windowing is transforms/audio/windowing.py; this
DoFn only opens the URI and routes what comes out.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam

from transforms.elements import ClipOutcome, ClipSource, FeatureWindow
from transforms.audio.fbank import FeatureConfig, WaveformTooShortError
from transforms.io.job_failures import WatchedFile, is_machine_failure
from transforms.progress import ProgressSettings
from transforms.io.storage import Storage, resolve_storage_options
from transforms.audio.windowing import SILENCE_PEAK, WindowedAudio

OUTCOMES = "outcomes"


class DecodeAndFeaturize(beam.DoFn):
    """ClipSource (or a plain URI) -> a FeatureWindow per window (main output), emitted as each
    window fills, and exactly one (clip_id, ClipOutcome) on the 'outcomes' output once the clip
    is done.

    A failure part-way through a file still leaves the windows emitted before it in flight;
    the ClipOutcome carries the error so the clip is reassembled as an error, not a label.
    Errors of the machine or the store (transforms/io/job_failures.py: out of memory, storage
    that failed after its retries) are raised instead: they say nothing about the input.
    """

    def __init__(self, features: FeatureConfig, storage_options: dict | None = None,
                 max_duration_seconds: float | None = None, hop_seconds: float | None = None,
                 progress: ProgressSettings | None = None):
        self._features = features
        self._storage_options = storage_options or {}
        self._max_duration = max_duration_seconds
        self._hop_seconds = hop_seconds
        self._progress_settings = progress or ProgressSettings()
        self._decoded = beam.metrics.Metrics.counter("audio_labelling", "clips_decoded")
        self._windows = beam.metrics.Metrics.counter("audio_labelling", "windows_featurized")
        self._audio_ms = beam.metrics.Metrics.counter("audio_labelling", "audio_ms_decoded")
        self._storage = None

    def setup(self):
        self._storage = Storage(resolve_storage_options(self._storage_options))
        self._progress = self._progress_settings.tally()

    def finish_bundle(self):
        self._progress.flush()

    def process(self, source: ClipSource | str):
        if self._storage is None:   # process() called outside a runner
            self.setup()
        source = ClipSource.of(source)
        clip, emitted, watched = None, 0, None
        try:
            with self._storage.open_clip(source) as raw, \
                    WindowedAudio(watched := WatchedFile(raw), self._features, self._hop_seconds,
                                  self._max_duration) as audio:
                header = audio.header
                clip = source.clip_info(duration_seconds=header.duration_seconds,
                                        original_sample_rate=header.original_sample_rate,
                                        channels=header.channels)
                for window in audio:
                    yield FeatureWindow(clip=clip, window_index=window.index,
                                        start_seconds=window.start_seconds, end_seconds=window.end_seconds,
                                        features=window.features)
                    emitted += 1
                    self._windows.inc()
        except Exception as e:
            # Errors of the machine or the store fail the bundle (the runner retries it; if they
            # persist the run fails), also when the decoder swallowed or wrapped them.
            if watched is not None and watched.failure is not None:
                raise watched.failure
            if is_machine_failure(e):
                raise
            # Every failure of the input becomes a row; the stage says where.
            stage = "features" if isinstance(e, WaveformTooShortError) else "read"
            self._progress.add(errors=1, sources_done=int(source.shard_uri is None))
            yield beam.pvalue.TaggedOutput(OUTCOMES, (source.clip_id, ClipOutcome(
                source.source_uri, clip, emitted, source.error(stage, e))))
            return
        if watched.failure is not None:   # swallowed by the decoder (see WatchedFile): raised
            raise watched.failure
        self._decoded.inc()
        self._audio_ms.inc(int(audio.decoded_seconds * 1000))
        # A shard's members are not sources: ReadSources counts the shard done.
        self._progress.add(files_decoded=1, audio_seconds=audio.decoded_seconds,
                           sources_done=int(source.shard_uri is None))
        silent = audio.peak < SILENCE_PEAK
        # The row says what was decoded, and whether the header claimed more (a cut-off file).
        clip = dataclasses.replace(clip, duration_seconds=audio.decoded_seconds,
                                   declared_duration_seconds=audio.declared_duration_seconds,
                                   truncated=audio.truncated)
        yield beam.pvalue.TaggedOutput(OUTCOMES, (source.clip_id, ClipOutcome(
            source.source_uri, clip, emitted, silent=silent)))
