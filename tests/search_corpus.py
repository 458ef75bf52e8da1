"""A generated archive for the search and custom-class tests, labelled once per session.

At 8 kHz (the pipeline resamples to 16 kHz), short files so the tiny random-weight model labels
it in about a minute on 2 cores:

* ``snippet.wav``: a 10 s signature (tone bursts at fixed frequencies, a warble and a noise
  burst), copied into three 40 s files (``long/long-0..2.wav``) at different offsets
  (:data:`SNIPPET_OFFSETS`), with other sounds around it (noise, tones, clicks);
* 500 other files of 1-3 s: 50 of the custom class (:func:`chirp_pattern`: three rising chirps
  0.25 s apart, in ``short/pattern-NNN.wav``) and 450 of tones, noise, falling chirps, clicks,
  AM tones and mixtures (``short/other-NNN.wav``).

Labelled with ``--hop_seconds 1`` (so a copy's best window starts within a hop of its offset)
and ``--emit_embeddings``.
"""
from __future__ import annotations

import os

import numpy as np
import soundfile

RATE = 8000
SNIPPET_SECONDS = 10.0
LONG_SECONDS = 40.0
SNIPPET_OFFSETS = (7.3, 21.0, 13.6)       # seconds into long-0, long-1, long-2
HOP_SECONDS = 1.0
PATTERN_FILES = 50
OTHER_FILES = 450


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * RATE))) / RATE


def snippet() -> np.ndarray:
    rng = np.random.default_rng(1234)
    out = np.zeros(int(SNIPPET_SECONDS * RATE))
    for i, hz in enumerate((523.0, 784.0, 659.0, 1046.0, 880.0, 392.0)):   # tone bursts
        t = _t(0.7)
        start = int((0.2 + i * 0.9) * RATE)
        out[start:start + len(t)] += 0.5 * np.sin(2 * np.pi * hz * t) * np.hanning(len(t))
    t = _t(2.5)                                                             # a warble
    warble = 0.4 * np.sin(2 * np.pi * (1500 * t + 40 * np.sin(2 * np.pi * 6 * t)))
    out[int(5.8 * RATE):int(5.8 * RATE) + len(t)] += warble
    burst = rng.standard_normal(int(1.2 * RATE)) * 0.3                     # a noise burst
    out[int(8.5 * RATE):int(8.5 * RATE) + len(burst)] += burst[:len(out) - int(8.5 * RATE)]
    return np.clip(out, -1, 1).astype(np.float32)


def chirp(seconds: float, f0: float, f1: float) -> np.ndarray:
    t = _t(seconds)
    return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))


def chirp_pattern(seconds: float, rng) -> np.ndarray:
    """The custom class: three rising chirps 0.2 s long, 0.25 s apart, over faint noise."""
    out = rng.standard_normal(len(_t(seconds))) * 0.02
    first = rng.uniform(0.05, max(0.06, seconds - 0.75))
    base = rng.uniform(600, 900)
    for i in range(3):
        c = 0.6 * chirp(0.2, base, base * 3) * np.hanning(int(0.2 * RATE))
        s = int((first + i * 0.25) * RATE)
        out[s:s + len(c)] += c[:len(out) - s]
    return np.clip(out, -1, 1).astype(np.float32)


def other_sound(seconds: float, rng) -> np.ndarray:
    t = _t(seconds)
    n = len(t)
    kind = rng.integers(0, 6)
    if kind == 0:
        x = np.sin(2 * np.pi * rng.uniform(100, 3500) * t)
    elif kind == 1:
        x = rng.standard_normal(n) * rng.uniform(0.1, 0.5)
    elif kind == 2:
        f0 = rng.uniform(1500, 3800)
        x = chirp(seconds, f0, f0 / rng.uniform(2, 8))                       # falling
    elif kind == 3:
        x = np.zeros(n)
        x[rng.integers(0, n, rng.integers(3, 60))] = 1.0
    elif kind == 4:
        x = np.sin(2 * np.pi * rng.uniform(150, 1200) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 12) * t))
    else:
        x = np.sin(2 * np.pi * rng.uniform(100, 2000) * t) * 0.5 + rng.standard_normal(n) * 0.2
    return np.clip(x * rng.uniform(0.2, 0.8), -1, 1).astype(np.float32)


def long_file(index: int, rng) -> np.ndarray:
    """40 s of other sounds with the snippet at SNIPPET_OFFSETS[index]."""
    out = np.concatenate([other_sound(2.0, rng) for _ in range(int(LONG_SECONDS / 2))])
    start = int(SNIPPET_OFFSETS[index] * RATE)
    piece = snippet()
    out[start:start + len(piece)] = piece
    return out


def write(path: str, samples: np.ndarray) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, samples, RATE, subtype="PCM_16")
    return path


def write_corpus(folder: str) -> dict:
    """Write the archive's audio under ``folder/audio`` and the query under ``folder/snippet.wav``.
    Returns {"audio": dir, "snippet": path, "long": [paths], "pattern": [paths], "other": [paths]}."""
    rng = np.random.default_rng(7)
    audio = os.path.join(folder, "audio")
    longs = [write(os.path.join(audio, "long", f"long-{i}.wav"), long_file(i, rng)) for i in range(3)]
    pattern = [write(os.path.join(audio, "short", f"pattern-{i:03d}.wav"),
                     chirp_pattern(rng.uniform(1.0, 3.0), rng)) for i in range(PATTERN_FILES)]
    other = [write(os.path.join(audio, "short", f"other-{i:03d}.wav"),
                   other_sound(rng.uniform(1.0, 3.0), rng)) for i in range(OTHER_FILES)]
    return {"audio": audio, "snippet": write(os.path.join(folder, "snippet.wav"), snippet()),
            "long": longs, "pattern": pattern, "other": other}


# ------------------------------------------------------------------ the shared, labelled archive

def label(audio: str | list[str], output: str, model: str, run_id: str, *extra: str):
    """Label with the pipeline as the archive's nightly job would (embeddings on, 1 s hop)."""
    from pipeline.main import run

    inputs = [audio] if isinstance(audio, str) else list(audio)
    argv = [a for path in inputs for a in ("--input", path)]
    return run([*argv, "--output", output, "--model", model, "--emit_embeddings", "--hop_seconds",
                str(HOP_SECONDS), "--run_id", run_id, "--batch_size", "8", *extra])


def copy_archive(archive: dict, target: str) -> str:
    """A copy of the labelled output root (tables, manifests, index) to change without touching
    the shared one."""
    import shutil

    shutil.copytree(archive["output"], target)
    return target


def labelled_archive_fixture(tmp_path_factory, tiny_checkpoint) -> dict:
    import time

    from pipeline.index import build

    folder = str(tmp_path_factory.mktemp("search_archive"))
    corpus = write_corpus(folder)
    output = os.path.join(folder, "out")
    started = time.monotonic()
    summary = label(corpus["audio"], output, tiny_checkpoint, "r1")
    labelled = time.monotonic() - started
    started = time.monotonic()
    report = build(output)
    corpus.update(output=output, run_id="r1", model=tiny_checkpoint, summary=summary,
                  seconds={"label": round(labelled, 1), "index": round(time.monotonic() - started, 1)},
                  index_report=report)
    return corpus
