"""Streaming decode + windowing (transforms/audio/windowing.py), Beam-free."""
import io
import os

import numpy as np
import pytest
import soundfile

from pipeline.demo.audio import noise, tone, write_audio
from tests.audio_corpus import LONG_SECONDS, write_long, write_nan_midway
from transforms.audio.audio_decode import AudioDecodeError, decode_audio
from transforms.audio.fbank import FeatureConfig, WaveformTooShortError, ast_input_features
from transforms.audio.windowing import WindowedAudio, WindowGeometry, iter_windows, plan_windows

CONFIG = FeatureConfig()            # AST: 1024 frames, 128 mel bins, 16 kHz
W = 163840                          # 10.24 s
GEOMETRY = WindowGeometry.for_features(CONFIG)
HALF = WindowGeometry.for_features(CONFIG, 5.12)
PAD = np.float32(-CONFIG.mean / (2 * CONFIG.std))    # a zero padding frame after normalisation


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    return write_long(str(tmp_path_factory.mktemp("long") / "long95.wav"))


def spans(windows):
    return [(w.start_sample, w.stop_sample) for w in windows]


def test_geometry_is_the_checkpoints_input_length():
    assert (GEOMETRY.window_samples, GEOMETRY.hop_samples, GEOMETRY.min_samples) == (W, W, 400)
    assert GEOMETRY.window_seconds == 10.24
    assert HALF.hop_samples == W // 2
    short = WindowGeometry.for_features(FeatureConfig(max_length=100))
    assert short.window_samples == 16000
    for bad in (0.0, -1.0, 10.25, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="hop_seconds"):
            WindowGeometry.for_features(CONFIG, bad)


def test_95_s_file_no_overlap(long_wav):
    wave = soundfile.read(long_wav, dtype="float32")[0]    # 16 kHz already: no resampling
    with WindowedAudio(long_wav, CONFIG) as audio:
        # The whole-file facts come from the header, before any window is decoded.
        assert audio.header.duration_seconds == LONG_SECONDS
        assert (audio.header.original_sample_rate, audio.header.channels) == (16000, 1)
        assert audio.num_windows == 0
        windows = list(audio)
    assert [w.index for w in windows] == list(range(10))
    # Nine full windows, then the last one end-aligned: 84.76-95.0 s, overlapping the ninth.
    assert [w.start_seconds for w in windows] == pytest.approx([10.24 * k for k in range(9)] + [95.0 - 10.24])
    assert [w.end_seconds for w in windows] == pytest.approx([10.24 * k for k in range(1, 10)] + [95.0])
    for w in windows:
        assert w.stop_sample - w.start_sample == W
        expected = ast_input_features(wave[w.start_sample:w.stop_sample], CONFIG)
        np.testing.assert_array_equal(w.features, expected)
    # The last window is as full of real audio as the first: no more padding frames than a
    # full window's (its 1022 frames, then the 2 zero frames AST pads every 10.24 s clip with).
    padded = [int(np.all(w.features == PAD, axis=1).sum()) for w in windows]
    assert padded[-1] == padded[0] == 2


def test_95_s_file_half_hop(long_wav):
    windows = list(iter_windows(long_wav, CONFIG, hop_seconds=5.12))
    # 17 full windows (the last 81.92-92.16 s), then one end-aligned window 84.76-95.0 s.
    assert len(windows) == 18
    assert [w.start_seconds for w in windows] == pytest.approx([5.12 * k for k in range(17)] + [95.0 - 10.24])
    assert [w.end_seconds for w in windows] == pytest.approx([5.12 * k + 10.24 for k in range(17)] + [95.0])
    last = windows[-1]
    assert (last.start_sample, last.stop_sample) == (95 * 16000 - W, 95 * 16000)
    wave = soundfile.read(long_wav, dtype="float32")[0]
    np.testing.assert_array_equal(last.features, ast_input_features(wave[-W:], CONFIG))
    assert int(np.all(last.features == PAD, axis=1).sum()) == 2   # as many as any full window


THIRD = WindowGeometry.for_features(CONFIG, 3.0)    # 48000 samples, no divisor of W


@pytest.mark.parametrize("geometry, n, expected", [
    (GEOMETRY, W, [(0, W)]),
    # Just over 1, 2 and 3 windows, no overlap: the last window ends at the file's end.
    (GEOMETRY, W + 1, [(0, W), (1, W + 1)]),
    (GEOMETRY, W + 399, [(0, W), (399, W + 399)]),
    (GEOMETRY, 2 * W + 1, [(0, W), (W, 2 * W), (W + 1, 2 * W + 1)]),
    (GEOMETRY, 3 * W + 160, [(0, W), (W, 2 * W), (2 * W, 3 * W), (2 * W + 160, 3 * W + 160)]),
    (GEOMETRY, 9 * W, [(k * W, (k + 1) * W) for k in range(9)]),   # a multiple: no extra window
    (GEOMETRY, 5000, [(0, 5000)]),                          # shorter than a window: one padded window
    (GEOMETRY, W - 1, [(0, W - 1)]),
    (GEOMETRY, 399, [(0, 399)]),                            # listed; fbank refuses it
    # The same lengths with 50% overlap.
    (HALF, W, [(0, W)]),
    (HALF, W + 1, [(0, W), (1, W + 1)]),
    (HALF, 2 * W, [(0, W), (W // 2, 3 * W // 2), (W, 2 * W)]),
    (HALF, 2 * W + 1, [(0, W), (W // 2, 3 * W // 2), (W, 2 * W), (W + 1, 2 * W + 1)]),
    (HALF, 3 * W + 160, [(0, W), (W // 2, 3 * W // 2), (W, 2 * W), (3 * W // 2, 5 * W // 2),
                         (2 * W, 3 * W), (2 * W + 160, 3 * W + 160)]),
    # A hop that does not divide the window: 3 s hops, then the end-aligned window.
    (THIRD, 2 * W + 1, [(k * 48000, k * 48000 + W) for k in range(4)] + [(W + 1, 2 * W + 1)]),
])
def test_last_window_rule(geometry, n, expected):
    windows = plan_windows(n, geometry)
    assert windows == expected
    if n >= W:
        # Every window of a file at least one window long is full of real audio ...
        assert all(stop - start == W for start, stop in windows)
        # ... and the last one ends at the file's end.
        assert windows[-1][1] == n


@pytest.mark.parametrize("hop", [None, 5.12, 3.0, 10.0])
@pytest.mark.parametrize("n", [400, 5000, W - 1, W, W + 1, W + 399, 2 * W + 7, 3 * W + 12345])
def test_streaming_cuts_what_the_plan_says(hop, n):
    geometry = WindowGeometry.for_features(CONFIG, hop)
    buf = io.BytesIO()
    soundfile.write(buf, noise(n / 16000, 16000, 3), 16000, format="WAV", subtype="PCM_16")
    buf.seek(0)
    windows = list(iter_windows(buf, CONFIG, hop, block_frames=7000))
    assert spans(windows) == plan_windows(n, geometry)
    assert [w.index for w in windows] == list(range(len(windows)))


@pytest.mark.parametrize("name, rate, channels", [
    ("noise_stereo.flac", 44100, 2), ("tone.mp3", 48000, 2), ("chirp.ogg", 22050, 1), ("low.wav", 8000, 1)])
def test_streamed_windows_equal_a_whole_file_decode(tmp_path, name, rate, channels):
    """Block reads + streaming resampling give the very samples decode_audio gives (the MP3 case
    catches soundfile's per-read seeks, which corrupt block reads of MP3)."""
    seconds = 23.0
    path = write_audio(str(tmp_path / name), tone(seconds, rate, 523.0) + noise(seconds, rate, 4), rate, channels)
    wave = decode_audio(path).waveform
    with WindowedAudio(path, CONFIG, hop_seconds=5.12, block_frames=4096) as audio:
        windows = list(audio)
    assert audio.num_samples == len(wave)
    assert spans(windows) == plan_windows(len(wave), HALF)
    for w in windows:
        np.testing.assert_array_equal(w.features, ast_input_features(wave[w.start_sample:w.stop_sample], CONFIG))


class CountingReader(io.RawIOBase):
    """A seekable binary file that counts the bytes read from it."""

    def __init__(self, path):
        self._f = open(path, "rb")
        self.bytes_read = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def readinto(self, b):
        n = self._f.readinto(b)
        self.bytes_read += n
        return n

    def close(self):
        self._f.close()
        super().close()


def test_windows_come_out_before_the_file_is_read(long_wav):
    reader = CountingReader(long_wav)
    with WindowedAudio(reader, CONFIG) as audio:
        first = next(iter(audio))
        assert first.index == 0
        # 10.24 s window + at most one 65536-frame block (4.1 s) of the 95 s file.
        assert reader.bytes_read < 0.2 * os.path.getsize(long_wav)
    reader.close()


def test_failure_midway_comes_after_the_windows_before_it(tmp_path):
    path = write_nan_midway(str(tmp_path / "nan.wav"), seconds=40.0, nan_at=30.0)
    got = []
    with pytest.raises(AudioDecodeError, match="NaN") as info:
        for w in iter_windows(path, CONFIG):
            got.append(w.index)
    assert info.value.stage == "decode"
    assert got == [0, 1]          # 0-10.24 and 10.24-20.48 s were complete before the bad block


def test_too_short_for_one_frame(tmp_path):
    with pytest.raises(WaveformTooShortError):
        list(iter_windows(write_audio(str(tmp_path / "a.wav"), tone(200 / 16000, 16000), 16000), CONFIG))
    # 1000 samples at 44.1 kHz are 363 at 16 kHz: too short only after resampling.
    with pytest.raises(WaveformTooShortError):
        list(iter_windows(write_audio(str(tmp_path / "b.wav"), tone(1000 / 44100, 44100), 44100), CONFIG))
    # A single frame at 44.1 kHz: (almost) nothing survives resampling; still an error, not 0 windows.
    with pytest.raises(WaveformTooShortError):
        list(iter_windows(write_audio(str(tmp_path / "d.wav"), tone(1 / 44100, 44100) + 0.1, 44100), CONFIG))
    assert len(list(iter_windows(write_audio(str(tmp_path / "c.wav"), tone(0.025, 16000), 16000), CONFIG))) == 1


def test_header_guards_apply_before_any_decoding(long_wav, tmp_path):
    with pytest.raises(AudioDecodeError, match="max_duration_seconds") as info:
        WindowedAudio(long_wav, CONFIG, max_duration_seconds=60.0)
    assert info.value.stage == "decode"
    assert len(list(iter_windows(long_wav, CONFIG, max_duration_seconds=95.0))) == 10
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="not a readable audio file"):
        WindowedAudio(str(empty), CONFIG)
