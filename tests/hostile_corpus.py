"""A generated corpus of corrupt and hostile audio inputs, each with the stage it must fail at.

Every entry is made from scratch here (no binaries in git). Headers are written by hand with
struct so that each lie (rate, channels, frame count, codec) is exactly the one named.
"""
from __future__ import annotations

import io
import os
import struct

import numpy as np
import soundfile

from pipeline.demo.audio import FORMATS, tone


def encoded(ext: str, samples: np.ndarray, rate: int = 16000, subtype: str | None = None) -> bytes:
    fmt, default_subtype = FORMATS[ext]
    buf = io.BytesIO()
    soundfile.write(buf, samples.astype(np.float32), rate, format=fmt, subtype=subtype or default_subtype)
    return buf.getvalue()


def wav_header(*, fmt_tag: int = 1, channels: int = 1, rate: int = 16000, bits: int = 16,
               data_bytes: int, riff_bytes: int | None = None) -> bytes:
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block_align) & 0xFFFFFFFF,
                      block_align & 0xFFFF, bits)
    riff = riff_bytes if riff_bytes is not None else 4 + 8 + len(fmt) + 8 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff & 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt))
            + fmt + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def float_wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    data = samples.astype("<f4").tobytes()
    return wav_header(fmt_tag=3, bits=32, rate=rate, data_bytes=len(data)) + data


def build_hostile_inputs() -> dict[str, tuple[bytes, str | None]]:
    """name -> (file bytes, expected error stage, or None where the file must be labelled).
    Names carry the extension a user would see."""
    rng = np.random.default_rng(1234)
    one_s = tone(1.0, 16000)
    good = {ext: encoded(ext, one_s) for ext in FORMATS}
    cases: dict[str, tuple[bytes, str]] = {}

    def add(name, data, stage="decode"):
        assert name not in cases, name
        cases[name] = (data, stage)

    # Empty and random content, under every extension.
    for ext in FORMATS:
        add(f"empty.{ext}", b"")
        add(f"random_small.{ext}", rng.bytes(64))
        add(f"random_large.{ext}", rng.bytes(200_000))
    add("zeros.wav", bytes(10_000))
    add("text_file.wav", b"this is not audio, it is a note to the archivist\n" * 50)
    add("html_error_page.mp3", b"<html><body>404 Not Found</body></html>")
    # Truncated headers: a few bytes of a valid file.
    for ext, data in good.items():
        for cut in (4, 12, 30):
            add(f"truncated_header_{cut}.{ext}", data[:cut])
    # Truncated data: header intact, body cut (FLAC and OGG notice; WAV/MP3 just end early).
    add("truncated_data.flac", good["flac"][: len(good["flac"]) // 3])
    add("truncated_data.ogg", good["ogg"][: len(good["ogg"]) // 2])
    # Corrupted body: valid header, garbage payload.
    flac = bytearray(good["flac"])
    flac[200:2000] = rng.bytes(1800)
    add("corrupt_body.flac", bytes(flac))
    ogg = bytearray(good["ogg"])
    ogg[100:] = rng.bytes(len(ogg) - 100)
    add("corrupt_body.ogg", bytes(ogg))
    # Hostile WAV headers.
    body = pcm16(one_s)
    add("rate_zero.wav", wav_header(rate=0, data_bytes=len(body)) + body)
    add("rate_one_hz.wav", wav_header(rate=1, data_bytes=len(body)) + body)
    add("rate_absurd.wav", wav_header(rate=4_000_000_000, data_bytes=len(body)) + body)
    add("channels_zero.wav", wav_header(channels=0, data_bytes=len(body)) + body)
    add("channels_65535.wav", wav_header(channels=65535, data_bytes=len(body)) + body)
    add("channels_1024.wav", wav_header(channels=1024, data_bytes=len(body)) + body)
    add("bits_zero.wav", wav_header(bits=0, data_bytes=len(body)) + body)
    # 13-bit PCM in 16-bit containers is legal WAV (libsndfile reads it as 16-bit).
    add("bits_13.wav", wav_header(bits=13, data_bytes=len(body)) + body, None)
    add("codec_unsupported_g729.wav", wav_header(fmt_tag=0x0083, data_bytes=len(body)) + body)
    add("codec_unknown_tag.wav", wav_header(fmt_tag=0x7777, data_bytes=len(body)) + body)
    add("header_only.wav", wav_header(data_bytes=0))
    add("header_claims_no_data_but_has_it.wav", good["wav"][:44])
    # Lying sizes that libsndfile clamps to the bytes really there: hostile, yet readable audio.
    # They must be labelled (stage None), neither crash nor allocate what the header claims.
    add("billions_of_frames.wav", wav_header(data_bytes=0xFFFFFFF0) + body[:3200], None)
    add("riff_size_lies.wav", wav_header(data_bytes=len(body), riff_bytes=0xFFFFFFFF) + body, None)
    # Non-finite samples in float WAVs.
    with_nan = one_s.copy()
    with_nan[100] = np.nan
    add("nan_samples.wav", float_wav(with_nan))
    with_inf = one_s.copy()
    with_inf[-1] = np.inf
    add("inf_samples.wav", float_wav(with_inf))
    add("all_nan.wav", float_wav(np.full(16000, np.nan)))
    # Decodes, but shorter than one 25 ms fbank frame after resampling.
    add("too_short_10ms.wav", encoded("wav", tone(0.01, 16000)), "features")
    add("one_sample.wav", encoded("wav", np.array([0.1])), "features")
    add("too_short_44k.flac", encoded("flac", tone(0.02, 44100), 44100), "features")
    # Wrong container under a familiar name: a PNG and a ZIP.
    add("image.wav", b"\x89PNG\r\n\x1a\n" + rng.bytes(500))
    add("archive.flac", b"PK\x03\x04" + rng.bytes(500))
    add("flac_magic_then_garbage.flac", b"fLaC" + rng.bytes(3000))
    add("ogg_magic_then_garbage.ogg", b"OggS" + rng.bytes(3000))
    add("id3_tag_then_garbage.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x10" + rng.bytes(3000))
    return cases


def write_hostile_inputs(folder: str) -> dict[str, str | None]:
    """Writes the corpus; returns file name -> expected stage (None: must be labelled)."""
    os.makedirs(folder, exist_ok=True)
    expected = {}
    for name, (data, stage) in build_hostile_inputs().items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        expected[name] = stage
    return expected
