"""Cut a recording of any length into the model's windows, streaming. Beam-free.

The model sees ``max_length`` fbank frames of 10 ms, so one window is
``max_length * 10 ms`` of audio at the model's rate: 1024 frames -> 10.24 s =
163840 samples at 16 kHz. Windows start every ``hop`` samples (``--hop_seconds``;
default one window, i.e. no overlap; any hop in (0, window] works, 50% included).

Which windows a file gets (N = samples after resampling, W = window, H = hop;
:func:`plan_windows` is the closed form, :class:`WindowedAudio` streams the same)::

    full windows     k = 0, 1, ...  while k*H + W <= N:  samples [k*H, k*H + W)
    last window      if samples after the last full window's end remain, one more
                     window [N - W, N): end-aligned, it ends at the file's end and
                     overlaps its predecessor, so it too is full of real audio
    short file       N < W: one window [0, N), padded as AST pads a short clip
                     (fbank of the samples that exist, zero frames up to
                     max_length, then normalisation)

* Every window of a file at least one window long holds W samples of real audio:
  the model never sees a tail of a few frames followed by padding (far from
  anything AST was trained on), and that tail never votes in the clip's labels
  with a mostly-padding window. The price: the end-aligned window re-scores up to
  W - 1 samples its predecessor scored (with ``--aggregate mean`` that audio
  counts twice).
* Only a file shorter than one window is padded.
* A file shorter than one 25 ms fbank frame (400 samples at 16 kHz, after
  resampling) cannot be featurised: :class:`~transforms.audio.fbank.WaveformTooShortError`
  (the pipeline records it with stage ``features``).
* Nothing at the end of a file is left out: any sample after the last full
  window's end, even one, gets the end-aligned window.
* No window starts inside audio that earlier windows already cover completely:
  with 50% hop a 95 s file gets 17 full windows (0-10.24 ... 81.92-92.16 s) and
  one end-aligned window 84.76-95.0 s.

Timestamps are in the source's timeline: resampling keeps time (soxr's output
sample n lies at n / rate seconds of the input), so a window's start is
``start_sample / rate`` and its end ``stop_sample / rate``, where ``stop_sample``
is one past the last sample the window really holds (the padding of a short file is not
counted). The end-aligned last window starts at ``(N - W) / rate``, which need not be a
multiple of the hop.
As in AST itself (Kaldi snip_edges), the last ``(n - 400) % 160`` samples of a
window of n samples fall in no frame: 80 samples (5 ms) of every full window.

Memory does not grow with the file: the file is read ``block_frames`` at a time
(libsndfile, or FFmpeg packet by packet for what libsndfile cannot open; see
transforms/audio/open_audio.py), down-mixed and resampled by a streaming soxr resampler ("HQ", the
same filter as the one-shot path, bit-identical output), and only the samples
of the window being filled are kept; each window's features are computed and
handed out as soon as the window is full.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np
import soxr

from transforms.audio.audio_decode import AudioDecodeError, AudioHeader, check_header, read_head, to_mono, with_declared_length
from transforms.audio.open_audio import AudioReader, open_audio
from transforms.audio.fbank import (FRAME_LENGTH_MS, FRAME_SHIFT_MS, FeatureConfig, WaveformTooShortError,
                              ast_input_features)

__all__ = ["WindowGeometry", "Window", "WindowedAudio", "plan_windows", "iter_windows",
           "DEFAULT_BLOCK_FRAMES"]

# Source frames read per block: 65536 frames is 1.5 s at 44.1 kHz, 1 MB per 4 channels of float32.
DEFAULT_BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True)
class WindowGeometry:
    """Window and hop in samples at the model's rate, and the fewest samples a window needs."""
    window_samples: int
    hop_samples: int
    sample_rate: int
    min_samples: int   # one fbank frame (25 ms)

    @classmethod
    def for_features(cls, features: FeatureConfig, hop_seconds: float | None = None) -> "WindowGeometry":
        """The checkpoint's window (max_length frames of 10 ms) and a hop in (0, window]."""
        rate = int(features.sampling_rate)
        window = features.max_length * int(rate * FRAME_SHIFT_MS / 1000)
        if hop_seconds is None:
            hop = window
        else:
            if not (isinstance(hop_seconds, (int, float)) and math.isfinite(hop_seconds)):
                raise ValueError(f"hop_seconds must be a finite number, got {hop_seconds!r}")
            hop = int(round(hop_seconds * rate))
            if not 0 < hop <= window:
                raise ValueError(f"hop_seconds must be more than 0 and at most the model's window of "
                                 f"{window / rate:g} s, got {hop_seconds:g}")
        return cls(window_samples=window, hop_samples=hop, sample_rate=rate,
                   min_samples=int(rate * FRAME_LENGTH_MS / 1000))

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate


def plan_windows(num_samples: int, geometry: WindowGeometry) -> list[tuple[int, int]]:
    """(start, stop) sample ranges of the windows of a signal of ``num_samples`` samples.

    The closed form of the rule in the module docstring; :class:`WindowedAudio` emits the same
    windows without knowing ``num_samples`` in advance. A (short) first window shorter than
    ``geometry.min_samples`` is still listed: it is the features step that refuses it.
    """
    if num_samples <= 0:
        return []
    w, h = geometry.window_samples, geometry.hop_samples
    if num_samples < w:
        return [(0, num_samples)]
    full = 1 + (num_samples - w) // h
    windows = [(k * h, k * h + w) for k in range(full)]
    if num_samples > windows[-1][1]:
        windows.append((num_samples - w, num_samples))
    return windows


@dataclass(frozen=True)
class Window:
    index: int
    start_sample: int
    stop_sample: int          # exclusive; the samples the window really holds, padding not counted
    sample_rate: int
    features: np.ndarray = field(repr=False)   # (max_length, num_mel_bins) float32

    @property
    def start_seconds(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_seconds(self) -> float:
        return self.stop_sample / self.sample_rate


class _Windower:
    """Accumulates a sample stream and cuts it by the rule of :func:`plan_windows`.

    Holds at most one window plus one pushed chunk: after each push only the samples from
    the next window's start, or the last W samples if those start earlier (the end-aligned
    last window may need them), are kept.
    """

    def __init__(self, geometry: WindowGeometry):
        self._g = geometry
        self._buffer = np.zeros(0, np.float32)
        self._offset = 0      # absolute index of self._buffer[0]
        self._next = 0        # absolute start of the next full window
        self._index = 0
        self._covered = 0     # end of the last full window

    def push(self, chunk: np.ndarray) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(index, start, stop, samples) of every window the chunk completes. ``samples`` is a
        view that is only valid until the next call."""
        self._buffer = np.concatenate((self._buffer, chunk)) if self._buffer.size else chunk
        w, h = self._g.window_samples, self._g.hop_samples
        end = self._offset + self._buffer.shape[0]
        while end - self._next >= w:
            at = self._next - self._offset
            yield self._index, self._next, self._next + w, self._buffer[at:at + w]
            self._covered = self._next + w
            self._next += h
            self._index += 1
        keep = max(self._offset, min(self._next, end - w))
        self._buffer = self._buffer[keep - self._offset:]
        self._offset = keep

    def finish(self) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """The last window, if the rule gives one: end-aligned, or the whole of a short file."""
        end = self._offset + self._buffer.shape[0]
        w = self._g.window_samples
        if self._index == 0:
            # The whole (short) signal is the window even if it is empty after resampling: the
            # features step then refuses it as too short, never silently.
            yield 0, 0, end, self._buffer
        elif end > self._covered:
            yield self._index, end - w, end, self._buffer[self._buffer.shape[0] - w:]
        self._buffer = np.zeros(0, np.float32)


def _resampled_blocks(reader: AudioReader, header: AudioHeader, target_rate: int,
                      block_frames: int, max_duration_seconds: float | None,
                      decoded: list[int]) -> Iterator[np.ndarray]:
    """Mono float32 chunks at ``target_rate`` (each a new array), read ``block_frames`` source
    frames at a time. ``decoded[0]`` counts the source frames decoded so far.

    Applies decode_audio's data guards block by block: corrupt data, NaN/Inf, no frames at all,
    and the duration limit again on what is actually decoded (a header can understate it).
    """
    rate = header.original_sample_rate

    def resampling(step):
        """Runs one resampler call; any failure is a 'resample' error naming the rates."""
        try:
            return step()
        except Exception as e:
            raise AudioDecodeError("resample", f"resampling {rate} Hz -> {target_rate} Hz failed: {e}") from e

    resampler = None
    if rate != target_rate:
        resampler = resampling(lambda: soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ"))
    limit = None if max_duration_seconds is None else math.floor(max_duration_seconds * rate)
    read = 0
    blocks = reader.blocks(block_frames)
    while True:
        try:
            block = next(blocks, None)
        except Exception as e:
            raise AudioDecodeError("decode", f"audio data is corrupt or truncated after "
                                             f"{read / rate:.2f} s: {e}") from e
        if block is None:
            break
        n = block.shape[0]
        if not np.isfinite(block).all():
            raise AudioDecodeError("decode", f"audio contains NaN or infinite samples "
                                             f"(between {read / rate:.2f} s and {(read + n) / rate:.2f} s)")
        read += n
        decoded[0] = read
        if limit is not None and read > limit:
            raise AudioDecodeError("decode", f"decoded duration exceeds --max_duration_seconds "
                                             f"{max_duration_seconds:g}")
        mono = to_mono(block)
        if resampler is None:
            yield np.array(mono, dtype=np.float32, copy=True)   # a reader may reuse its buffer
            continue
        out = resampling(lambda: resampler.resample_chunk(np.ascontiguousarray(mono), last=False))
        if out.size:
            yield out
    if read == 0:
        raise AudioDecodeError("decode", "file holds no audio frames")
    if resampler is not None:
        out = resampling(lambda: resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        if out.size:
            yield out


class WindowedAudio:
    """An opened audio file: ``header`` at once (from the file header, nothing decoded yet), then
    iterate for its windows, each with its features. Iterate once; use as a context manager.

    Raises :class:`~transforms.audio.audio_decode.AudioDecodeError` (``stage`` is ``decode``,
    ``resample`` or ``features``) or :class:`~transforms.audio.fbank.WaveformTooShortError`; during
    iteration such an error can come after some windows were already produced.
    ``num_windows`` and ``num_samples`` (at the model's rate) count what has been produced.
    """

    def __init__(self, source: BinaryIO | str, features: FeatureConfig, hop_seconds: float | None = None,
                 max_duration_seconds: float | None = None, block_frames: int = DEFAULT_BLOCK_FRAMES):
        if block_frames < 1:
            raise ValueError(f"block_frames must be at least 1, got {block_frames}")
        self.geometry = WindowGeometry.for_features(features, hop_seconds)
        self._features = features
        self._max_duration = max_duration_seconds
        self._block_frames = block_frames
        head = read_head(source)
        self._reader = open_audio(source)
        try:
            self.header: AudioHeader = with_declared_length(check_header(self._reader.header, max_duration_seconds),
                                                            head)
        except BaseException:
            self._reader.close()
            raise
        self.num_windows = 0
        self.num_samples = 0
        self._decoded = [0]   # source frames decoded (at the file's own rate)
        self.peak = 0.0   # largest |sample| seen, to flag digital silence
        self._started = False

    @property
    def decoded_frames(self) -> int:
        """Source frames decoded so far (all of them once iteration has ended)."""
        return self._decoded[0]

    @property
    def decoded_seconds(self) -> float:
        """The duration actually decoded: after iteration, the file's real duration."""
        return self._decoded[0] / self.header.original_sample_rate

    @property
    def truncated(self) -> bool:
        """After iteration: the file decoded to less audio than its header claims."""
        return self.header.is_truncated(self._decoded[0])

    def __enter__(self) -> "WindowedAudio":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def decoder(self) -> str:
        """Which decoder reads the file: ``libsndfile`` or ``ffmpeg``."""
        return self._reader.decoder

    @property
    def declared_duration_seconds(self) -> float:
        """What the header claims; where it claims no length (raw AAC/AMR streams), after iteration
        what was decoded."""
        if not self.header.length_claimed:
            return self.decoded_seconds
        return self.header.declared_duration_seconds

    def close(self) -> None:
        self._reader.close()

    def __iter__(self) -> Iterator[Window]:
        if self._started:
            raise RuntimeError("WindowedAudio can be iterated only once")
        self._started = True
        windower = _Windower(self.geometry)
        for chunk in _resampled_blocks(self._reader, self.header, self.geometry.sample_rate,
                                       self._block_frames, self._max_duration, self._decoded):
            self.num_samples += chunk.shape[0]
            if chunk.size:
                self.peak = max(self.peak, float(np.abs(chunk).max()))
            for cut in windower.push(chunk):
                yield self._window(*cut)
        for cut in windower.finish():
            yield self._window(*cut)

    def _window(self, index: int, start: int, stop: int, samples: np.ndarray) -> Window:
        try:
            features = ast_input_features(samples, self._features)
        except WaveformTooShortError:
            raise
        except Exception as e:
            raise AudioDecodeError("features", f"fbank of window {index} failed: {e}") from e
        self.num_windows += 1
        return Window(index=index, start_sample=start, stop_sample=stop,
                      sample_rate=self.geometry.sample_rate, features=features)


# Below one step of 16-bit PCM: what a silent recording decodes to, whatever its format.
SILENCE_PEAK = 1.0 / 32768


def iter_windows(source: BinaryIO | str, features: FeatureConfig, hop_seconds: float | None = None,
                 max_duration_seconds: float | None = None,
                 block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[Window]:
    """The windows of one file, streaming (see the module docstring for which windows)."""
    with WindowedAudio(source, features, hop_seconds, max_duration_seconds, block_frames) as audio:
        yield from audio
