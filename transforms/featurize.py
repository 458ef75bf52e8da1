"""Beam glue: read one audio URI, decode it, compute the model's input features."""
from __future__ import annotations

import apache_beam as beam

from transforms.audio_decode import TARGET_SAMPLE_RATE, decode_audio
from transforms.elements import ClipSource, FeatureWindow
from transforms.fbank import FeatureConfig, ast_input_features
from transforms.storage import Storage, resolve_storage_options


class DecodeAndFeaturize(beam.DoFn):
    """ClipSource (or a plain URI) -> FeatureWindow, or an InputError on the 'errors' output."""

    def __init__(self, features: FeatureConfig, storage_options: dict | None = None,
                 max_duration_seconds: float | None = None):
        self._features = features
        self._storage_options = storage_options or {}
        self._max_duration = max_duration_seconds
        self._decoded = beam.metrics.Metrics.counter("audio_labelling", "clips_decoded")
        self._storage = None

    def setup(self):
        self._storage = Storage(resolve_storage_options(self._storage_options))

    def process(self, source: ClipSource | str):
        if self._storage is None:   # process() called outside a runner
            self.setup()
        source = ClipSource.of(source)
        try:
            with self._storage.open_clip(source) as f:
                audio = decode_audio(f, TARGET_SAMPLE_RATE, self._max_duration)
        except Exception as e:  # every failure becomes a row; the stage says where
            yield beam.pvalue.TaggedOutput("errors", source.error("read", e))
            return
        clip = source.clip_info(duration_seconds=audio.duration_seconds,
                                original_sample_rate=audio.original_sample_rate, channels=audio.channels)
        try:
            features = ast_input_features(audio.waveform, self._features)
        except Exception as e:  # too short to make one fbank frame, or worse
            yield beam.pvalue.TaggedOutput("errors", source.error("features", e))
            return
        self._decoded.inc()
        frames = self._features.max_length
        yield FeatureWindow(clip=clip, window_index=0, start_seconds=0.0,
                            end_seconds=min(audio.duration_seconds, frames / 100.0), features=features)
