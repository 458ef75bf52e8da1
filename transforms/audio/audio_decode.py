"""Decode an audio file into mono float32 at the model's rate; what a file's header says.

Files are opened by :func:`transforms.audio.open_audio.open_audio`: libsndfile first, FFmpeg
(PyAV) by content when libsndfile cannot (transforms/audio/ffmpeg_reader.py).
Beam-free, so it is testable on its own. Resampling uses soxr (libsoxr's
"HQ" polyphase resampler): a well-kept library with both one-shot and streaming
APIs, band-limited and alias-free, and several times faster than
scipy.signal.resample_poly for the awkward ratios archives contain
(44.1 kHz -> 16 kHz is 160/441).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

TARGET_SAMPLE_RATE = 16000
# Guards against hostile headers: a header may claim any rate or channel count.
MAX_CHANNELS = 64
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000


class AudioDecodeError(ValueError):
    """The input is not decodable audio. ``stage`` is where it failed."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class DecodedAudio:
    waveform: np.ndarray          # float32, mono, TARGET_SAMPLE_RATE
    original_sample_rate: int
    channels: int
    duration_seconds: float       # of the source, from its own frame count and rate


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels: (frames, channels) -> (frames,)."""
    return samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]


def resample(waveform: np.ndarray, source_rate: int, target_rate: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    if source_rate == target_rate:
        return np.ascontiguousarray(waveform, dtype=np.float32)
    return soxr.resample(waveform, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


@dataclass(frozen=True)
class AudioHeader:
    """What a file's header says, before any audio is read."""
    original_sample_rate: int
    channels: int
    frames: int                   # the decoder's frame count (libsndfile's: exact for WAV/FLAC,
                                  # clamped to the file; FFmpeg's: the container's duration)
    declared_frames: int = -1     # what the header itself claims (a WAV data chunk may claim more
                                  # than the file holds); -1: the same as ``frames``
    exact_length: bool = True     # False where the count is an estimate (MP3 without a Xing header)
    length_claimed: bool = True   # False: the file declares no length (raw AAC/AMR streams);
                                  # ``frames`` is then 0 and the decoded length is all there is
    min_slack_frames: int = 1152  # with an estimated count: the shortfall always tolerated
                                  # (one MPEG frame; FFmpeg's containers: a few codec frames)

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.original_sample_rate

    @property
    def declared_duration_seconds(self) -> float:
        return max(self.frames, self.declared_frames) / self.original_sample_rate

    def is_truncated(self, decoded_frames: int) -> bool:
        """The file decoded to fewer frames than its header claims. Where the header's count is
        an estimate (MPEG, FFmpeg's containers), a shortfall within ``min_slack_frames`` or 1%
        is not counted; a file that claims no length is never truncated."""
        if not self.length_claimed:
            return False
        declared = max(self.frames, self.declared_frames)
        slack = 0 if self.exact_length else max(self.min_slack_frames, declared // 100)
        return decoded_frames < declared - slack


# A WAV data chunk size that means "unknown" (streamed writers): no claim.
_UNKNOWN_WAV_SIZES = frozenset({0, 0xFFFFFFFF})


def wav_declared_frames(head: bytes) -> int | None:
    """Frames a RIFF/WAVE file's ``data`` chunk claims, from its first bytes; None when the head
    is not a WAV, holds no data chunk header, or says the size is unknown. libsndfile clamps its
    count to what the file holds, so a WAV cut short reports no shortfall on its own."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    at, block_align = 12, None
    while at + 8 <= len(head):
        chunk, size = head[at:at + 4], struct.unpack_from("<I", head, at + 4)[0]
        if chunk == b"fmt " and at + 8 + 14 <= len(head):
            block_align = struct.unpack_from("<H", head, at + 8 + 12)[0]
        elif chunk == b"data":
            if not block_align or size in _UNKNOWN_WAV_SIZES:
                return None
            return size // block_align
        at += 8 + size + (size & 1)
    return None


def open_sound(source: BinaryIO | str) -> soundfile.SoundFile:
    """Opens a path or seekable binary file object; an unreadable header is a 'decode' error."""
    try:
        return soundfile.SoundFile(source)
    except Exception as e:  # libsndfile reports every unreadable header as a generic error
        raise AudioDecodeError("decode", f"not a readable audio file: {e}") from e


def check_header(header: AudioHeader, max_duration_seconds: float | None = None) -> AudioHeader:
    """The header guards: plausible rate and channel count, declared duration within the limit."""
    rate, channels, frames = header.original_sample_rate, header.channels, header.frames
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError("decode", f"implausible sample rate {rate} Hz in header")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioDecodeError("decode", f"unsupported channel count {channels} (max {MAX_CHANNELS})")
    if max_duration_seconds is not None and frames / rate > max_duration_seconds:
        raise AudioDecodeError(
            "decode", f"declared duration {frames / rate:.1f} s exceeds --max_duration_seconds "
                      f"{max_duration_seconds:g}")
    return header


def read_head(source: BinaryIO | str, size: int = 1 << 16) -> bytes:
    """The first ``size`` bytes of a path or seekable file object, leaving its position as it was."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                return f.read(size)
        position = source.tell()
        try:
            return source.read(size)
        finally:
            source.seek(position)
    except (OSError, ValueError, AttributeError):
        return b""


def with_declared_length(header: AudioHeader, head: bytes) -> AudioHeader:
    """The header with what a WAV's data chunk claims (libsndfile's count is clamped)."""
    claimed = wav_declared_frames(head)
    return header if claimed is None else replace(header, declared_frames=claimed)


def decode_audio(source: BinaryIO | str, target_rate: int = TARGET_SAMPLE_RATE,
                 max_duration_seconds: float | None = None) -> DecodedAudio:
    """Reads a whole file (path or seekable binary file object) into memory.

    For files of any length use :mod:`transforms.audio.windowing`, which streams.
    """
    from transforms.audio.open_audio import open_audio   # it builds on this module's types

    reader = open_audio(source)
    try:
        header = check_header(reader.header, max_duration_seconds)
        rate = header.original_sample_rate
        try:
            samples = reader.read_all()
        except Exception as e:
            raise AudioDecodeError("decode", f"audio data is corrupt or truncated: {e}") from e
    finally:
        reader.close()
    if samples.shape[0] == 0:
        raise AudioDecodeError("decode", "file holds no audio frames")
    if not np.isfinite(samples).all():
        raise AudioDecodeError("decode", "audio contains NaN or infinite samples")
    mono = to_mono(samples)
    try:
        waveform = resample(mono, rate, target_rate)
    except Exception as e:
        raise AudioDecodeError("resample", f"resampling {rate} Hz -> {target_rate} Hz failed: {e}") from e
    return DecodedAudio(waveform=waveform, original_sample_rate=rate, channels=header.channels,
                        duration_seconds=samples.shape[0] / rate)
