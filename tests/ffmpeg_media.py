"""Test media made by the ffmpeg command-line tool (Debian's ``ffmpeg``; .ci/run installs it).

The pipeline decodes these with PyAV's own FFmpeg; the CLI is an independent encoder (and, for
the WAV reference, decoder) that the tests compare against. A missing ``ffmpeg`` fails the tests
that need it: they must not pass by skipping.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import soundfile

from pipeline.demo.audio import chirp, noise, tone


def ffmpeg_binary() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise AssertionError("these tests need the ffmpeg command: apt-get install -y ffmpeg (.ci/run does)")
    return path


def ffmpeg(*args: str) -> None:
    """Runs ``ffmpeg -y <args>``; a failure raises with ffmpeg's own message."""
    done = subprocess.run([ffmpeg_binary(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
                          capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise AssertionError(f"ffmpeg {' '.join(args)} failed: {done.stderr.strip()}")


def source_wav(path: str, seconds: float = 4.0, rate: int = 44100) -> str:
    """A stereo WAV with tones, a chirp and noise: something with a spectrum to compare."""
    n = int(seconds * rate)
    left = (tone(seconds, rate, 440.0) + 0.5 * chirp(seconds, rate) + noise(seconds, rate, 7))[:n]
    right = (tone(seconds, rate, 660.0) + noise(seconds, rate, 8))[:n]
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32) * 0.3, rate, format="WAV",
                    subtype="PCM_16")
    return path


def write_media(folder: str) -> dict[str, str]:
    """kind -> path of each test file, made from one source WAV (4 s, 44.1 kHz stereo):

    m4a       AAC in MP4 (audio only; the moov box at the end, ffmpeg's default)
    mp4       a small video track and an AAC sound track
    webm      Opus in WebM
    mkv       Vorbis in Matroska
    wma       WMA 2 in ASF
    amr       AMR-NB (8 kHz mono), raw AMR file: written with PyAV's FFmpeg, whose wheel has the
              AMR encoder Debian's ffmpeg lacks
    m4a_cut   AAC in MP4 with the moov box first (faststart), cut after half its bytes
    mp4_broken  the mp4 above cut after half its bytes: its moov box (the index) is lost
    """
    os.makedirs(folder, exist_ok=True)
    src = source_wav(os.path.join(folder, "source.wav.src"))
    out = {k: os.path.join(folder, name) for k, name in {
        "m4a": "speech.m4a", "mp4": "clip.mp4", "webm": "talk.webm", "mkv": "tune.mkv",
        "wma": "voicemail.wma", "amr": "phone.amr", "m4a_cut": "upload_cut.m4a",
        "mp4_broken": "broken.mp4"}.items()}
    ffmpeg("-f", "wav", "-i", src, "-c:a", "aac", "-b:a", "128k", out["m4a"])
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=4", "-f", "wav", "-i", src,
           "-c:v", "mpeg4", "-c:a", "aac", "-shortest", out["mp4"])
    ffmpeg("-f", "wav", "-i", src, "-c:a", "libopus", "-b:a", "64k", out["webm"])
    ffmpeg("-f", "wav", "-i", src, "-c:a", "libvorbis", out["mkv"])
    ffmpeg("-f", "wav", "-i", src, "-c:a", "wmav2", out["wma"])
    write_amr(src, out["amr"])
    faststart = os.path.join(folder, "faststart.m4a.src")
    ffmpeg("-f", "wav", "-i", src, "-c:a", "aac", "-movflags", "+faststart", "-f", "mp4", faststart)
    for whole, cut in ((faststart, out["m4a_cut"]), (out["mp4"], out["mp4_broken"])):
        data = open(whole, "rb").read()
        with open(cut, "wb") as f:
            f.write(data[: len(data) // 2])
    os.remove(faststart)
    os.remove(src)
    return out


def write_amr(wav: str, out: str) -> str:
    """``wav`` as AMR-NB (12.2 kbit/s, 8 kHz mono) in the raw .amr format, encoded with PyAV."""
    import av

    samples, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    with av.open(out, "w", format="amr") as container:
        stream = container.add_stream("libopencore_amrnb", rate=8000, layout="mono")
        stream.bit_rate = 12200
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        frame = av.AudioFrame.from_ndarray(mono[None, :].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = rate
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out


def to_float_wav(path: str, out: str) -> str:
    """``path`` decoded by the ffmpeg CLI into a 32-bit float WAV (no quantisation)."""
    ffmpeg("-i", path, "-c:a", "pcm_f32le", "-f", "wav", out)
    return out
