"""duration_seconds is what was decoded; a file cut short says so (clips.truncated)."""
import os

import pytest
import soundfile

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import run
from tests.audio_corpus import GOOD, write_good
from transforms.audio.audio_decode import wav_declared_frames
from transforms.audio.fbank import FeatureConfig
from transforms.audio.windowing import WindowedAudio


def cut(path: str, fraction: float) -> str:
    """A copy of the file with only the first ``fraction`` of its bytes: an interrupted upload."""
    data = open(path, "rb").read()
    root, ext = os.path.splitext(path)
    out = f"{root}_cut{ext}"
    with open(out, "wb") as f:
        f.write(data[: int(len(data) * fraction)])
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("truncated")
    wav = write_audio(str(folder / "speech.wav"), tone(8.0, 16000, 440.0) + noise(8.0, 16000, 1), 16000)
    mp3 = write_audio(str(folder / "music.mp3"), tone(6.0, 44100, 330.0) + noise(6.0, 44100, 2), 44100, 2)
    return {"wav": wav, "wav_cut": cut(wav, 0.5), "mp3": mp3, "mp3_cut": cut(mp3, 0.5)}


def decode(path):
    with WindowedAudio(path, FeatureConfig(), block_frames=4096) as audio:
        list(audio)
    return audio


def test_a_wav_cut_in_half_decodes_half_and_says_the_header_claimed_8_s(files):
    # libsndfile clamps its own count to the bytes present; the data chunk still claims 8 s.
    assert soundfile.info(files["wav_cut"]).frames < 4.1 * 16000
    assert wav_declared_frames(open(files["wav_cut"], "rb").read(4096)) == 8 * 16000
    audio = decode(files["wav_cut"])
    assert audio.decoded_seconds == pytest.approx(4.0, abs=0.01)
    assert audio.header.declared_duration_seconds == 8.0
    assert audio.truncated


def test_an_mp3_cut_in_half(files):
    audio = decode(files["mp3_cut"])
    assert audio.header.declared_duration_seconds == pytest.approx(6.0, abs=0.1)
    assert 2.0 < audio.decoded_seconds < 4.0 and audio.truncated


def test_intact_files_of_every_format_are_not_truncated(files, tmp_path):
    for path in write_good(str(tmp_path)) + [files["wav"], files["mp3"]]:
        audio = decode(path)
        assert not audio.truncated, path
        assert audio.decoded_seconds == pytest.approx(audio.header.declared_duration_seconds, abs=0.03), path


def test_rows_carry_the_decoded_duration_and_the_truncated_flag(files, tiny_checkpoint, tmp_path):
    folder = os.path.dirname(files["wav"])
    summary = run(["--input", folder, "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                   "--batch_size", "2", "--run_id", "cut"])
    rows = {os.path.basename(r["source_uri"]): r for r in summary.clips.to_pylist()}
    assert sorted(rows) == ["music.mp3", "music_cut.mp3", "speech.wav", "speech_cut.wav"]
    cut_wav = rows["speech_cut.wav"]
    assert cut_wav["duration_seconds"] == pytest.approx(4.0, abs=0.01)
    assert (cut_wav["declared_duration_seconds"], cut_wav["truncated"]) == (8.0, True)
    assert cut_wav["num_windows"] == 1            # labelled from the 4 s that are there
    assert rows["music_cut.mp3"]["truncated"] and rows["music_cut.mp3"]["duration_seconds"] < 4.0
    for name in ("speech.wav", "music.mp3"):
        assert not rows[name]["truncated"]
        assert rows[name]["duration_seconds"] == pytest.approx(rows[name]["declared_duration_seconds"], abs=0.03)
    assert rows["speech.wav"]["duration_seconds"] == 8.0
