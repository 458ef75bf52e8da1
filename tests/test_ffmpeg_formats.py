"""Formats beyond libsndfile (AAC/M4A, MP4 and WebM sound tracks, Matroska, WMA, AMR), decoded with
PyAV's FFmpeg, chosen by content; test media made by the ffmpeg command-line tool."""
import io
import os

import numpy as np
import pytest

from pipeline.main import run
from tests.ffmpeg_media import to_float_wav, write_media
from tests.shard_corpus import make_tar
from transforms.audio.audio_decode import AudioDecodeError
from transforms.audio.fbank import FeatureConfig
from transforms.audio.windowing import WindowedAudio
from transforms.io.sources import AUDIO_EXTENSIONS


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return write_media(str(tmp_path_factory.mktemp("ffmpeg_media")))


def windows(source, **kwargs):
    with WindowedAudio(source, FeatureConfig(), **kwargs) as audio:
        features = [w.features for w in audio]
    return audio, features


def test_fbank_of_an_m4a_matches_the_same_audio_converted_to_wav_by_ffmpeg(media, tmp_path):
    m4a, m4a_features = windows(media["m4a"])
    wav, wav_features = windows(to_float_wav(media["m4a"], str(tmp_path / "converted.wav")))
    assert (m4a.decoder, wav.decoder) == ("ffmpeg", "libsndfile")
    assert m4a.decoded_frames == wav.decoded_frames and len(m4a_features) == len(wav_features) == 1
    assert np.abs(m4a_features[0] - wav_features[0]).max() < 1e-3


@pytest.mark.parametrize("kind,rate", [("m4a", 44100), ("mp4", 44100), ("webm", 48000), ("mkv", 44100)])
def test_sound_tracks_decode_with_their_declared_duration(media, kind, rate):
    audio, features = windows(media[kind])
    assert audio.decoder == "ffmpeg"
    assert (audio.header.original_sample_rate, audio.header.channels) == (rate, 2)
    assert audio.declared_duration_seconds == pytest.approx(4.0, abs=0.01)
    # Encoders pad to whole codec frames: a few ms more (never less) than the source's 4 s.
    assert 4.0 - 0.005 <= audio.decoded_seconds <= 4.03 and not audio.truncated
    assert len(features) == 1 and np.isfinite(features[0]).all()


def test_wma_and_amr(media):
    wma, features = windows(media["wma"])
    # ASF declares its duration in ms with the encoder's delay: 4.04 s for 4 s of audio, which
    # decodes to about one WMA frame (2048 samples) less than that: within the slack, not truncated.
    assert (wma.decoder, wma.header.original_sample_rate, wma.header.channels) == ("ffmpeg", 44100, 2)
    assert wma.declared_duration_seconds == pytest.approx(4.04, abs=0.01)
    assert wma.decoded_seconds == pytest.approx(4.0, abs=0.01) and not wma.truncated and len(features) == 1
    amr, features = windows(media["amr"])
    # A raw AMR stream declares no length: what was decoded is its duration, never truncated.
    assert (amr.decoder, amr.header.original_sample_rate, amr.header.channels) == ("ffmpeg", 8000, 1)
    assert not amr.header.length_claimed and amr.declared_duration_seconds == amr.decoded_seconds
    assert amr.decoded_seconds == pytest.approx(4.0, abs=0.03) and not amr.truncated and len(features) == 1


def test_an_m4a_cut_short_is_decoded_up_to_the_cut_and_flagged(media):
    audio, features = windows(media["m4a_cut"])
    assert audio.truncated and audio.declared_duration_seconds == pytest.approx(4.0, abs=0.01)
    assert 1.0 < audio.decoded_seconds < 3.0 and len(features) == 1


def test_an_mp4_that_lost_its_index_is_a_decode_error(media):
    with pytest.raises(AudioDecodeError) as info:
        windows(media["mp4_broken"])
    assert info.value.stage == "decode" and "FFmpeg" in str(info.value)


def test_corrupt_packets_are_a_decode_error_not_silence(media, tmp_path):
    data = bytearray(open(media["m4a"], "rb").read())
    rng = np.random.default_rng(5)
    # speech.m4a keeps its index at the end: garble the AAC payload in front of it.
    data[2000:20000] = rng.bytes(18000)
    with pytest.raises(AudioDecodeError) as info:
        windows(io.BytesIO(bytes(data)))
    assert info.value.stage == "decode" and "corrupt" in str(info.value)


def test_the_decoder_is_chosen_by_content_not_by_name(media, tmp_path):
    disguised = tmp_path / "really_an_m4a.wav"
    disguised.write_bytes(open(media["m4a"], "rb").read())
    assert windows(str(disguised))[0].decoder == "ffmpeg"
    wav = to_float_wav(media["m4a"], str(tmp_path / "ref.wav"))
    named_m4a = tmp_path / "really_a_wav.m4a"
    named_m4a.write_bytes(open(wav, "rb").read())
    assert windows(str(named_m4a))[0].decoder == "libsndfile"


def test_decoding_streams_in_bounded_blocks(media):
    """Packets are decoded as they are demuxed: blocks of about block_frames, never the file."""
    from transforms.audio.open_audio import open_audio

    reader = open_audio(media["mp4"])
    try:
        sizes = [b.shape[0] for b in reader.blocks(4096)]
    finally:
        reader.close()
    assert len(sizes) > 30 and max(sizes) <= 4096 + 2048 and sum(sizes) == pytest.approx(4.017 * 44100, abs=50)


def test_a_file_object_from_object_storage(media, s3_server):
    """What the workers get for an s3:// URI: an fsspec file object read with range requests."""
    fs = s3_server.filesystem()
    key = f"{s3_server.bucket}/ffmpeg/{os.path.basename(media['webm'])}"
    fs.pipe(key, open(media["webm"], "rb").read())
    with fs.open(key, "rb") as f:
        audio, features = windows(f)
    assert audio.decoder == "ffmpeg" and audio.decoded_seconds == pytest.approx(4.0, abs=0.01)
    assert len(features) == 1


def test_directory_scans_take_the_new_extensions():
    for ext in (".m4a", ".aac", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".opus", ".wma", ".amr"):
        assert ext in AUDIO_EXTENSIONS


def test_the_pipeline_labels_them_from_a_folder_and_a_shard_with_one_error_row(media, tiny_checkpoint,
                                                                              tmp_path):
    folder = os.path.dirname(media["m4a"])
    shard = os.path.join(folder, "shard-000.tar")
    with open(shard, "wb") as f:
        f.write(make_tar([("s1.m4a", open(media["m4a"], "rb").read()),
                          ("s2.webm", open(media["webm"], "rb").read())]))
    summary = run(["--input", folder, "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                   "--batch_size", "4", "--run_id", "ffmpeg", "--max_error_fraction", "1.0"])
    clips = {os.path.relpath(r["clip_id"], folder): r for r in summary.clips.to_pylist()}
    assert set(clips) == {"speech.m4a", "clip.mp4", "talk.webm", "tune.mkv", "voicemail.wma", "phone.amr",
                          "upload_cut.m4a", "shard-000.tar#s1.m4a", "shard-000.tar#s2.webm"}
    for name, row in clips.items():
        assert row["labels"] and row["num_windows"] == 1, name
        assert row["truncated"] == (name == "upload_cut.m4a"), name
    assert clips["talk.webm"]["original_sample_rate"] == 48000
    errors = summary.errors.to_pylist()
    assert [(os.path.basename(e["source_uri"]), e["stage"], e["error_type"]) for e in errors] == [
        ("broken.mp4", "decode", "AudioDecodeError")]
    assert summary.discovered == 10 and summary.labelled == 9 and summary.errored == 1
