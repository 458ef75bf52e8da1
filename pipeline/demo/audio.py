"""Generate small audio files (tones, noise, chirps) in several formats and rates. No network."""
from __future__ import annotations

import os

import numpy as np
import soundfile

# (format, subtype, extension) for every container libsndfile writes (and the pipeline reads).
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * hz * t)


def noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return 0.3 * np.random.default_rng(seed).standard_normal(int(seconds * rate))


def chirp(seconds: float, rate: int, f0: float = 100.0, f1: float = 6000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    k = (f1 - f0) / seconds
    return 0.5 * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))


def write_m4a(path: str, samples: np.ndarray, rate: int, channels: int = 1) -> str:
    """AAC in MP4 (what phones and podcasts write), encoded with PyAV's FFmpeg: a format the
    pipeline decodes with FFmpeg because libsndfile cannot."""
    import av

    data = np.repeat(samples[None, :], channels, axis=0) if channels > 1 else samples[None, :]
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo" if channels == 2 else "mono")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data, dtype=np.float32), format="fltp",
                                           layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_audio(path: str, samples: np.ndarray, rate: int, channels: int = 1) -> str:
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext == "m4a":
        return write_m4a(path, samples, rate, channels)
    fmt, subtype = FORMATS[ext]
    data = np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples
    soundfile.write(path, data.astype(np.float32), rate, format=fmt, subtype=subtype)
    return path


# name, generator, seconds, rate, channels
DEMO_CLIPS = [
    ("tone_440hz.wav", lambda s, r: tone(s, r, 440.0), 3.0, 16000, 1),
    ("tone_1khz_stereo.flac", lambda s, r: tone(s, r, 1000.0), 5.0, 44100, 2),
    ("noise_white.ogg", lambda s, r: noise(s, r, 1), 4.0, 22050, 1),
    ("chirp_up.mp3", chirp, 6.0, 48000, 2),
    ("noise_long.wav", lambda s, r: noise(s, r, 2), 12.0, 8000, 1),
    ("chirp_short.flac", chirp, 1.0, 16000, 1),
    ("tone_low.ogg", lambda s, r: tone(s, r, 150.0), 2.0, 32000, 2),
    ("mixed.mp3", lambda s, r: tone(s, r, 660.0) + noise(s, r, 3) * 0.3, 8.0, 44100, 1),
    ("podcast_like.m4a", lambda s, r: tone(s, r, 220.0) + noise(s, r, 4) * 0.2, 5.0, 44100, 2),
]


def write_demo_audio(folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    return [write_audio(os.path.join(folder, name), gen(seconds, rate), rate, channels)
            for name, gen, seconds, rate, channels in DEMO_CLIPS]
