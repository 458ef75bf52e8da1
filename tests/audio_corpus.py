"""Test inputs generated on the fly: good files of every format and broken ones."""
from __future__ import annotations

import os

import numpy as np
import soundfile

from pipeline.demo.audio import chirp, noise, tone, write_audio

GOOD = [
    ("tone.wav", lambda r: tone(1.0, r, 440.0), 16000, 1),
    ("noise_stereo.flac", lambda r: noise(5.0, r, 1), 44100, 2),
    ("chirp.ogg", lambda r: chirp(3.0, r), 22050, 1),
    ("tone.mp3", lambda r: tone(2.0, r, 880.0), 48000, 2),
    ("long_noise.wav", lambda r: noise(12.0, r, 2), 8000, 1),
]


def write_good(folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    return [write_audio(os.path.join(folder, name), gen(rate), rate, ch) for name, gen, rate, ch in GOOD]


def write_broken(folder: str) -> dict[str, str]:
    """name -> the stage its error row must carry."""
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, "empty.wav"), "wb").close()
    with open(os.path.join(folder, "random_bytes.wav"), "wb") as f:
        f.write(np.random.default_rng(7).bytes(5000))
    full = os.path.join(folder, "_full.flac.tmp")
    write_audio(full + ".flac", noise(3.0, 16000, 4), 16000)
    data = open(full + ".flac", "rb").read()
    os.remove(full + ".flac")
    with open(os.path.join(folder, "truncated.flac"), "wb") as f:
        f.write(data[: len(data) // 3])
    # 200 samples at 16 kHz: decodes, but is shorter than one 25 ms fbank frame.
    write_audio(os.path.join(folder, "too_short.wav"), tone(200 / 16000, 16000), 16000)
    return {"empty.wav": "decode", "random_bytes.wav": "decode", "truncated.flac": "decode",
            "too_short.wav": "features"}


# A 95 s recording of distinct parts at known times (seconds): tone, noise, silence, chirp.
LONG_PARTS = [("tone", 0.0, 20.0), ("noise", 20.0, 45.0), ("silence", 45.0, 60.0), ("chirp", 60.0, 95.0)]
LONG_SECONDS = 95.0


def long_recording(rate: int = 16000) -> np.ndarray:
    parts = {"tone": lambda s: tone(s, rate, 440.0), "noise": lambda s: noise(s, rate, 5),
             "silence": lambda s: np.zeros(int(s * rate)), "chirp": lambda s: chirp(s, rate)}
    return np.concatenate([parts[name](end - start) for name, start, end in LONG_PARTS])


def write_long(path: str, rate: int = 16000, channels: int = 1) -> str:
    """The 95 s recording as a file (format from the extension)."""
    return write_audio(path, long_recording(rate), rate, channels)


def write_nan_midway(path: str, seconds: float = 40.0, nan_at: float = 30.0, rate: int = 16000) -> str:
    """A float WAV that decodes fine up to ``nan_at`` seconds, then holds a NaN sample."""
    data = noise(seconds, rate, 9).astype(np.float32)
    data[int(nan_at * rate)] = np.nan
    soundfile.write(path, data, rate, format="WAV", subtype="FLOAT")
    return path
