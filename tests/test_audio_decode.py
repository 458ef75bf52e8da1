import io

import numpy as np
import pytest
import soundfile

from pipeline.demo.audio import tone, write_audio
from tests.audio_corpus import GOOD, write_broken, write_good
from transforms.audio.audio_decode import TARGET_SAMPLE_RATE, AudioDecodeError, decode_audio


def test_every_format_decodes_to_mono_16k(tmp_path):
    for path, (name, _, rate, channels) in zip(write_good(str(tmp_path)), GOOD):
        audio = decode_audio(path)
        assert audio.waveform.dtype == np.float32 and audio.waveform.ndim == 1, name
        assert audio.original_sample_rate == rate and audio.channels == channels, name
        expected = audio.duration_seconds * TARGET_SAMPLE_RATE
        assert abs(len(audio.waveform) - expected) <= 2, name


def test_resampled_tone_keeps_its_pitch(tmp_path):
    path = write_audio(str(tmp_path / "t.wav"), tone(2.0, 44100, 1000.0), 44100)
    wave = decode_audio(path).waveform
    spectrum = np.abs(np.fft.rfft(wave))
    peak_hz = np.argmax(spectrum) * TARGET_SAMPLE_RATE / len(wave)
    assert abs(peak_hz - 1000.0) < 1.0


def test_stereo_is_the_channel_mean(tmp_path):
    left, right = tone(1.0, 16000, 300.0), tone(1.0, 16000, 700.0)
    path = str(tmp_path / "st.wav")
    soundfile.write(path, np.stack([left, right], 1).astype(np.float32), 16000, subtype="FLOAT")
    np.testing.assert_allclose(decode_audio(path).waveform, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("name", ["empty.wav", "random_bytes.wav", "truncated.flac"])
def test_broken_files_raise_decode_errors(tmp_path, name):
    write_broken(str(tmp_path))
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(str(tmp_path / name))
    assert info.value.stage == "decode"


def test_nan_samples_are_refused():
    buf = io.BytesIO()
    data = np.zeros(1600, np.float32)
    data[10] = np.nan
    soundfile.write(buf, data, 16000, format="WAV", subtype="FLOAT")
    buf.seek(0)
    with pytest.raises(AudioDecodeError, match="NaN"):
        decode_audio(buf)


def test_declared_duration_guard(tmp_path):
    path = write_audio(str(tmp_path / "t.wav"), tone(3.0, 16000), 16000)
    with pytest.raises(AudioDecodeError, match="max_duration_seconds"):
        decode_audio(path, max_duration_seconds=2.0)
    assert decode_audio(path, max_duration_seconds=4.0).duration_seconds == pytest.approx(3.0)
