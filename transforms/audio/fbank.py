"""Kaldi-compatible log-mel filter bank features, exactly as the Audio Spectrogram Transformer sees them.

This is a pure numpy/scipy re-implementation of what ``transformers.ASTFeatureExtractor`` computes
(``_extract_fbank_features`` -> ``transformers.audio_utils.spectrogram`` when torchaudio is absent, which
in turn mirrors ``torchaudio.compliance.kaldi.fbank(..., window_type="hanning", num_mel_bins=128)``).
It deliberately imports nothing heavier than numpy/scipy so that Beam workers can featurise audio
without torch, torchaudio, transformers or MindSpore being importable.

The options AST uses, and where each one lives below (torchaudio's ``compliance/kaldi.py`` layout: one
small function per Kaldi option group):

=====================  ==============================  =========================================
Kaldi option           AST value                       implemented in
=====================  ==============================  =========================================
frame_length/shift     25 ms / 10 ms (400/160 @16k)    :func:`_frame_geometry`
snip_edges             True: 1 + (n - 400) // 160      :func:`_frame_geometry`
dither                 0.0 (none)                      (nothing to do)
remove_dc_offset       True (per-frame mean removed)   :func:`_preprocess_frames`
preemphasis_coeff      0.97, applied after DC removal  :func:`_preprocess_frames`
window_type            "hanning" (symmetric Hann)      :func:`_window`
round_to_power_of_two  True: FFT size 512              :func:`_frame_geometry`
use_power              True: |X|^2                     :func:`_power_spectrum`
low_freq / high_freq   20 Hz / Nyquist                 :func:`_mel_banks`
mel scale              1127 ln(1 + f/700), filters     :func:`_mel_banks`
                       triangular in *mel* space
use_log_fbank          ln(max(E, float32 eps))         :func:`_log_mel`
=====================  ==============================  =========================================

Numerics (measured against the HF numpy path, see ``tests/test_fbank.py``):

* The waveform is first quantised to float32, because ``ASTFeatureExtractor.__call__`` does that to
  float64 input before anything else; then everything up to and including the FFT runs in float64,
  exactly like ``audio_utils.spectrogram`` does.
* float64 for the FFT is not optional. Pre-emphasis (1 - 0.97 z^-1) attenuates the lowest mel bands by
  about 30 dB relative to the frame's total energy, and a float32 FFT has a noise floor ~1e-7 of the
  *frame* energy, not of each bin. With float32 framing + FFT, bins whose energy is far below the frame's
  strongest component drift: measured 1-4e-4 on white noise (lowest mel bins), ~1e-3 on pure tones and
  up to ~3e-2 on a linear chirp -- far outside the 1e-4 parity bar. Framing in float64 but FFT in
  float32 is no better (same figures), so the FFT is float64 (~0.75 ms of the ~1.8 ms per 10-s clip).
  In float64 the error is the float32 rounding of the final log values (<= 1e-6).
* After the FFT the spectrum is rounded to complex64 -- ``spectrogram`` stores its STFT in a complex64
  buffer, so this is what the reference does too -- and the power spectrum, mel projection and log are
  computed in float32. Those steps only lose relative precision (~1e-7), which the log turns into an
  absolute error of ~1e-7.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import scipy.fft
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "FeatureConfig",
    "FRAME_LENGTH_SAMPLES",
    "FRAME_SHIFT_SAMPLES",
    "WaveformTooShortError",
    "kaldi_fbank",
    "kaldi_fbank_batch",
    "pad_or_truncate",
    "ast_input_features",
]

# ---------------------------------------------------------------------------------------------------------
# Kaldi / AST constants
# ---------------------------------------------------------------------------------------------------------
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
FRAME_LENGTH_SAMPLES = 400  # 25 ms at 16 kHz
FRAME_SHIFT_SAMPLES = 160  # 10 ms at 16 kHz
PREEMPHASIS_COEFF = 0.97
LOW_FREQ_HZ = 20.0
# Kaldi's log floor: torchaudio's kaldi._get_epsilon is float32 eps; HF passes mel_floor=1.192092955078125e-07,
# which is the same number (2**-23).
LOG_FLOOR = np.float32(np.finfo(np.float32).eps)

# AudioSet statistics used by every released AST checkpoint (ASTFeatureExtractor defaults).
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974

# Frames featurised per chunk in the batched path: keeps the float64 frame buffer (~4 MB per 1000
# frames) and its spectrum in cache instead of streaming a 32-clip batch through main memory.
_CHUNK_FRAMES = 1024


class WaveformTooShortError(ValueError):
    """The waveform has fewer samples than one analysis window (snip_edges=True gives zero frames)."""

    def __init__(self, num_samples: int, min_samples: int, sample_frequency: float):
        self.num_samples = int(num_samples)
        self.min_samples = int(min_samples)
        self.sample_frequency = float(sample_frequency)
        super().__init__(
            f"waveform too short for Kaldi fbank: got {self.num_samples} samples "
            f"({self.num_samples / self.sample_frequency:.4f} s at {self.sample_frequency:g} Hz), "
            f"need at least {self.min_samples} samples ({self.min_samples / self.sample_frequency:.4f} s, "
            f"one {FRAME_LENGTH_MS:g} ms window)"
        )


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureConfig:
    """What the model expects on its input: the fields of an AST ``preprocessor_config.json``."""

    num_mel_bins: int = 128
    max_length: int = 1024  # frames the model takes
    mean: float = AUDIOSET_MEAN
    std: float = AUDIOSET_STD
    sampling_rate: int = 16000
    do_normalize: bool = True

    def __post_init__(self) -> None:
        if self.num_mel_bins <= 0:
            raise ValueError(f"num_mel_bins must be positive, got {self.num_mel_bins}")
        if self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")
        if self.sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be positive, got {self.sampling_rate}")
        if self.do_normalize and not (math.isfinite(self.std) and self.std != 0.0):
            raise ValueError(f"std must be finite and non-zero when do_normalize is set, got {self.std}")
        if not math.isfinite(self.mean):
            raise ValueError(f"mean must be finite, got {self.mean}")

    @classmethod
    def from_preprocessor_config(
        cls, preprocessor: Mapping[str, Any] | None, model_config: Mapping[str, Any] | None = None
    ) -> "FeatureConfig":
        """Builds the config from a HF ``preprocessor_config.json`` dict.

        Each field is taken from ``preprocessor`` if present (and not null); ``max_length`` and
        ``num_mel_bins`` then fall back to the model's ``config.json`` (``ASTConfig`` carries both);
        anything still missing gets the AudioSet defaults of ``ASTFeatureExtractor``.
        """
        pre = dict(preprocessor or {})
        model = dict(model_config or {})

        def pick(key: str, default: Any, *sources: Mapping[str, Any]) -> Any:
            for source in sources:
                value = source.get(key)
                if value is not None:
                    return value
            return default

        return cls(
            num_mel_bins=int(pick("num_mel_bins", cls.num_mel_bins, pre, model)),
            max_length=int(pick("max_length", cls.max_length, pre, model)),
            mean=float(pick("mean", cls.mean, pre)),
            std=float(pick("std", cls.std, pre)),
            sampling_rate=int(pick("sampling_rate", cls.sampling_rate, pre)),
            do_normalize=bool(pick("do_normalize", cls.do_normalize, pre)),
        )


# ---------------------------------------------------------------------------------------------------------
# Kaldi option groups, one small numeric function each
# ---------------------------------------------------------------------------------------------------------
def _next_power_of_2(x: int) -> int:
    """Kaldi's round_to_power_of_two: the FFT size is the window length rounded up to a power of two."""
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _frame_geometry(sample_frequency: float) -> tuple[int, int, int]:
    """(window_size, window_shift, padded_window_size) in samples: Kaldi's frame options.

    Like torchaudio's ``_get_waveform_and_window_properties``: 25 ms / 10 ms truncated to whole samples,
    FFT size rounded up to a power of two. At 16 kHz this is 400 / 160 / 512, the numbers the HF numpy
    path hard-codes. snip_edges=True: only frames that fit entirely in the signal are kept, so there are
    ``1 + (n - window_size) // window_shift`` of them and the first one starts at sample 0.

    Only 16 kHz is what AST checkpoints use. At other rates this follows Kaldi/torchaudio (and so HF's
    torchaudio path); HF's numpy path would keep 400/160/512 samples whatever the rate.
    """
    if not sample_frequency > 0:
        raise ValueError(f"sample_frequency must be positive, got {sample_frequency}")
    window_size = int(sample_frequency * FRAME_LENGTH_MS * 0.001)
    window_shift = int(sample_frequency * FRAME_SHIFT_MS * 0.001)
    if window_size < 2 or window_shift < 1:
        raise ValueError(f"sample_frequency {sample_frequency} Hz is too low for a 25 ms / 10 ms frame")
    return window_size, window_shift, _next_power_of_2(window_size)


def _num_frames(num_samples: int, window_size: int, window_shift: int) -> int:
    """snip_edges=True frame count."""
    return 1 + (num_samples - window_size) // window_shift


@functools.lru_cache(maxsize=None)
def _window(window_size: int) -> np.ndarray:
    """Kaldi "hanning": the *symmetric* Hann window 0.5 - 0.5 cos(2 pi n / (N - 1)), zero at both ends.

    (torchaudio builds it with ``torch.hann_window(N, periodic=False)``, HF with
    ``window_function(400, "hann", periodic=False)`` = ``np.hanning(400)``. It is not Kaldi's default
    "povey" window, which is this raised to the power 0.85.) float64, read-only, cached.
    """
    window = np.hanning(window_size).astype(np.float64)
    window.setflags(write=False)
    return window


def _preprocess_frames(frames: np.ndarray, starts: np.ndarray, means: np.ndarray, window: np.ndarray,
                       out: np.ndarray) -> np.ndarray:
    """Kaldi's per-frame processing in ProcessWindow order: DC removal -> pre-emphasis -> window.

    ``frames`` is a strided view of the *globally* pre-emphasised signal e[n] = x[n] - 0.97 x[n-1], so for
    frame sample k >= 1 it already holds x[k] - 0.97 x[k-1]. Kaldi works per frame instead:

        remove_dc_offset:  x'[k] = x[k] - m                          (m = mean of the raw frame)
        preemphasis:       y[k]  = x'[k] - 0.97 x'[k-1]   (k >= 1)
                           y[0]  = x'[0] - 0.97 x'[0]      (Kaldi treats x'[-1] as x'[0])

    which expands to y[k] = e[k] - 0.03 m for k >= 1 and y[0] = 0.03 (x[0] - m). The first column,
    whose global e[k] would reach into the previous frame, is therefore overwritten from ``starts``
    (= x at each frame start). Pre-emphasising once over the whole signal instead of once per frame
    avoids recomputing the 60% overlap; in float64 the reassociation is invisible (~1e-16 relative).
    Everything here is float64 (see the module docstring for why). Result goes to ``out``.
    """
    one_minus = 1.0 - PREEMPHASIS_COEFF
    offsets = one_minus * means
    np.subtract(frames, offsets[..., None], out=out)
    out[..., 0] = one_minus * (starts - means)
    out *= window
    return out


def _power_spectrum(fft_buffer: np.ndarray) -> np.ndarray:
    """use_power=True: |rfft(frame zero-padded to 512)|^2, (frames, 257) float32.

    ``fft_buffer`` holds the windowed frames already zero-padded to the FFT size (Kaldi's
    padded_window_size). The FFT runs in float64; its output is rounded to complex64 because that is
    the dtype HF's ``spectrogram`` stores the STFT in; squaring in float32 then loses nothing further.
    """
    spectrum = scipy.fft.rfft(fft_buffer, axis=-1)  # no overwrite_x: the buffer's zero tail is reused
    spectrum = spectrum.astype(np.complex64)
    power = spectrum.real * spectrum.real
    power += spectrum.imag * spectrum.imag
    return power


def _mel_scale(freq):
    """Kaldi mel scale (natural log, 1127), not the HTK log10/2595 form (equal up to rounding)."""
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=None)
def _mel_banks(num_mel_bins: int, padded_window_size: int, sample_frequency: float) -> np.ndarray:
    """Kaldi mel filter bank, (num_fft_bins, num_mel_bins) float64, exactly HF's
    ``mel_filter_bank(257, 128, 20, sr // 2, sr, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)``.

    Kaldi (and torchaudio's ``get_mel_banks``) place num_mel_bins + 2 edge points evenly on the mel scale
    between low_freq = 20 Hz and high_freq = Nyquist, and each filter is a triangle that is linear in
    *mel* (not in Hz) between its left edge, centre and right edge. Each FFT bin's weight is evaluated at
    the mel value of the bin's centre frequency. Filters are unnormalised (peak 1, no Slaney area norm).

    With 512-point FFTs at 16 kHz the bins are 31.25 Hz apart, while the lowest filters are only ~28-30 Hz
    wide, so a filter can fall between two bins: at 128 bins filter 3 (0-based, as Kaldi numbers them)
    spans 62.96-93.01 Hz, strictly between bin 2 (62.5 Hz) and bin 3 (93.75 Hz). It is identically zero
    and its log-energy is always log(eps). That is what the model was trained on, so it is kept. The Nyquist bin sits exactly on the last right edge and gets weight 0, which is why
    torchaudio can drop it and HF keep it with the same result.
    """
    sample_frequency = float(sample_frequency)
    high_freq = float(sample_frequency // 2)  # HF: max_frequency=sampling_rate // 2
    num_fft_bins = padded_window_size // 2 + 1
    mel_low, mel_high = _mel_scale(LOW_FREQ_HZ), _mel_scale(high_freq)
    edges = np.linspace(mel_low, mel_high, num_mel_bins + 2)  # left/centre/right edges of all filters
    bin_width = sample_frequency / padded_window_size
    bin_mels = _mel_scale(bin_width * np.arange(num_fft_bins))

    # Same arithmetic as HF's _create_triangular_filter_bank, so the weights agree bit for bit.
    edge_diff = np.diff(edges)
    slopes = edges[None, :] - bin_mels[:, None]
    rising = -slopes[:, :-2] / edge_diff[:-1]  # (bin - left) / (centre - left)
    falling = slopes[:, 2:] / edge_diff[1:]  # (right - bin) / (right - centre)
    banks = np.maximum(0.0, np.minimum(rising, falling))
    banks.setflags(write=False)
    return banks


# Filters per block of the banded mel projection.
_MEL_BLOCK = 16


@functools.lru_cache(maxsize=None)
def _mel_projection(num_mel_bins: int, padded_window_size: int,
                    sample_frequency: float) -> tuple[tuple[int, int, int, np.ndarray], ...]:
    """The mel bank as float32 dense blocks: ((first_filter, first_bin, end_bin, weights), ...).

    The bank is ~1.5% non-zero and banded (filter k only covers the bins between its edges, and each
    FFT bin feeds at most two adjacent triangles), so a full (frames x 257) @ (257 x 128) GEMM is mostly
    multiplications by zero. Splitting the filters into groups of 16 and multiplying each group only by
    the bins it covers sums exactly the same non-zero terms at ~4x less cost than the dense GEMM and
    ~1.5x less than a CSR product. float32 accumulation of positive terms loses ~1e-7 relative.
    """
    banks = _mel_banks(num_mel_bins, padded_window_size, sample_frequency)
    blocks = []
    for first in range(0, num_mel_bins, _MEL_BLOCK):
        weights = banks[:, first:first + _MEL_BLOCK]
        covered = np.flatnonzero(weights.any(axis=1))
        lo, hi = (int(covered[0]), int(covered[-1]) + 1) if covered.size else (0, 0)
        block = np.ascontiguousarray(weights[lo:hi], dtype=np.float32)
        block.setflags(write=False)
        blocks.append((first, lo, hi, block))
    return tuple(blocks)


def _log_mel(power: np.ndarray, projection: tuple[tuple[int, int, int, np.ndarray], ...],
             num_mel_bins: int) -> np.ndarray:
    """Mel energies then ln(max(E, eps)) in float32: (frames, 257) -> (frames, num_mel_bins).

    Kaldi floors with float32 eps (torchaudio's _get_epsilon); HF's mel_floor is the same 2**-23. Empty
    filters and silent frames therefore come out as exactly log(eps) = -15.942385.
    """
    energies = np.empty((power.shape[0], num_mel_bins), dtype=np.float32)
    for first, lo, hi, weights in projection:
        np.matmul(power[:, lo:hi], weights, out=energies[:, first:first + weights.shape[1]])
    np.maximum(energies, LOG_FLOOR, out=energies)
    return np.log(energies, out=energies)


# ---------------------------------------------------------------------------------------------------------
# Core: a (batch, samples) float32 array -> (batch, frames, mel)
# ---------------------------------------------------------------------------------------------------------
def _as_float32_waveforms(waveforms: np.ndarray, ndim: int) -> np.ndarray:
    array = np.asarray(waveforms)
    if np.iscomplexobj(array):
        raise ValueError("complex-valued waveforms are not supported")
    if array.ndim != ndim:
        what = "a mono 1-D waveform" if ndim == 1 else "a 2-D (batch, samples) array of equal-length waveforms"
        raise ValueError(f"expected {what}, got shape {array.shape}")
    # ASTFeatureExtractor converts float64 input to float32 before extracting; doing the same makes the
    # features identical for callers that hand us float64.
    return np.ascontiguousarray(array, dtype=np.float32)


def _fbank_chunk(segment: np.ndarray, num_frames: int, window_shift: int, window: np.ndarray,
                 projection, num_mel_bins: int, x: np.ndarray, emph: np.ndarray,
                 fft_buffer: np.ndarray, out: np.ndarray) -> None:
    """Features of the first ``num_frames`` frames of each row of ``segment`` (b, samples) into ``out``
    (b, num_frames, mel). ``x``, ``emph`` and ``fft_buffer`` are reusable work buffers at least this big."""
    b, seg_len = segment.shape
    window_size = window.shape[0]
    padded = fft_buffer.shape[1]
    xb, eb = x[:b, :seg_len], emph[:b, :seg_len]
    np.copyto(xb, segment)  # float32 -> float64
    # Global pre-emphasis e[n] = x[n] - 0.97 x[n-1] (see _preprocess_frames); e[0] is never read.
    np.multiply(xb[:, :-1], -PREEMPHASIS_COEFF, out=eb[:, 1:])
    eb[:, 1:] += xb[:, 1:]
    # Frames as strided views (no copy, no python loop): frame t of row i starts at sample t * shift.
    row, item = xb.strides
    frame_strides = (row, window_shift * item, item)
    raw_frames = as_strided(xb, (b, num_frames, window_size), frame_strides, writeable=False)
    emph_frames = as_strided(eb, (b, num_frames, window_size), frame_strides, writeable=False)
    means = raw_frames.mean(axis=-1)  # remove_dc_offset uses the mean of the raw frame
    starts = xb[:, 0:num_frames * window_shift:window_shift]
    buffer = fft_buffer[:b * num_frames]
    frames = buffer.reshape(b, num_frames, padded)[..., :window_size]
    _preprocess_frames(emph_frames, starts, means, window, out=frames)
    power = _power_spectrum(buffer)
    out[...] = _log_mel(power, projection, num_mel_bins).reshape(b, num_frames, num_mel_bins)


def _fbank_rows(waveforms: np.ndarray, num_mel_bins: int, sample_frequency: float) -> np.ndarray:
    """(B, n) float32 -> (B, T, num_mel_bins) float32, processed in cache-sized chunks.

    Short clips are grouped so a chunk holds about _CHUNK_FRAMES frames; clips longer than that are cut
    into runs of _CHUNK_FRAMES frames (frames are independent, so the result is the same), which also
    bounds the memory a long recording needs.
    """
    num_mel_bins = int(num_mel_bins)
    if num_mel_bins < 1:
        raise ValueError(f"num_mel_bins must be positive, got {num_mel_bins}")
    sample_frequency = float(sample_frequency)
    window_size, window_shift, padded = _frame_geometry(sample_frequency)
    batch, num_samples = waveforms.shape
    if num_samples < window_size:
        raise WaveformTooShortError(num_samples, window_size, sample_frequency)
    num_frames = _num_frames(num_samples, window_size, window_shift)
    window = _window(window_size)
    projection = _mel_projection(num_mel_bins, padded, sample_frequency)

    out = np.empty((batch, num_frames, num_mel_bins), dtype=np.float32)
    if batch == 0:
        return out
    if num_frames <= _CHUNK_FRAMES:
        clips_per_chunk, frames_per_chunk = min(batch, max(1, _CHUNK_FRAMES // num_frames)), num_frames
    else:
        clips_per_chunk, frames_per_chunk = 1, _CHUNK_FRAMES
    max_segment = (frames_per_chunk - 1) * window_shift + window_size
    # Work buffers, allocated once and reused by every chunk (fresh multi-MB allocations page-fault).
    x = np.empty((clips_per_chunk, max_segment), dtype=np.float64)
    emph = np.empty_like(x)
    # FFT input buffer: samples 400..511 of every row stay zero (the zero-padding to the FFT size), so
    # scipy does not have to copy the frames into a padded array itself.
    fft_buffer = np.zeros((clips_per_chunk * frames_per_chunk, padded), dtype=np.float64)
    for first in range(0, batch, clips_per_chunk):
        last = min(batch, first + clips_per_chunk)
        for frame0 in range(0, num_frames, frames_per_chunk):
            count = min(frames_per_chunk, num_frames - frame0)
            sample0 = frame0 * window_shift
            segment = waveforms[first:last, sample0:sample0 + (count - 1) * window_shift + window_size]
            _fbank_chunk(segment, count, window_shift, window, projection, num_mel_bins,
                         x, emph, fft_buffer, out[first:last, frame0:frame0 + count])
    return out


# ---------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------
def kaldi_fbank(waveform: np.ndarray, num_mel_bins: int = 128, sample_frequency: float = 16000.0) -> np.ndarray:
    """(num_frames, num_mel_bins) float32 log-mel fbank of a mono float waveform.

    Equivalent to ``torchaudio.compliance.kaldi.fbank(w[None], sample_frequency=sr, window_type="hanning",
    num_mel_bins=num_mel_bins)`` and to ASTFeatureExtractor's numpy path before padding/normalisation.
    The waveform is used at the scale given (AST feeds [-1, 1] floats, not int16-scaled samples).
    ``num_frames = 1 + (n - 400) // 160`` at 16 kHz; fewer than 400 samples raises
    :class:`WaveformTooShortError`.
    """
    x = _as_float32_waveforms(waveform, ndim=1)
    return _fbank_rows(x[None, :], num_mel_bins, sample_frequency)[0]


def kaldi_fbank_batch(waveforms: np.ndarray, num_mel_bins: int = 128,
                      sample_frequency: float = 16000.0) -> np.ndarray:
    """(batch, num_frames, num_mel_bins) for a 2-D array of equal-length waveforms; the fast path.

    Row i equals ``kaldi_fbank(waveforms[i])`` (same arithmetic; BLAS may pick a different kernel for
    a different number of rows, so equal to float32 rounding, <= 1e-6, rather than bit for bit).
    """
    x = _as_float32_waveforms(waveforms, ndim=2)
    return _fbank_rows(x, num_mel_bins, sample_frequency)


def pad_or_truncate(fbank: np.ndarray, max_length: int) -> np.ndarray:
    """Zero-pads frames at the end, or keeps the first ``max_length`` frames, like ASTFeatureExtractor.

    Works on (frames, mel) or (batch, frames, mel). Returns float32; the input itself when it already has
    ``max_length`` frames and is float32.
    """
    fbank = np.asarray(fbank, dtype=np.float32)
    if fbank.ndim not in (2, 3):
        raise ValueError(f"expected (frames, mel) or (batch, frames, mel), got shape {fbank.shape}")
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    frames = fbank.shape[-2]
    if frames == max_length:
        return fbank
    if frames > max_length:
        return np.ascontiguousarray(fbank[..., :max_length, :])
    padded = np.zeros(fbank.shape[:-2] + (max_length, fbank.shape[-1]), dtype=np.float32)
    padded[..., :frames, :] = fbank
    return padded


def _normalize(features: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """(x - mean) / (2 std) in float32 with float32-rounded constants, as HF's ``normalize`` computes it
    (float32 array op python float). Padding frames are normalised too (0 -> -mean / (2 std)), as in HF."""
    if not config.do_normalize:
        return features
    features = features - np.float32(config.mean)
    features /= np.float32(config.std * 2)
    return features


def ast_input_features(waveform: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """fbank -> pad/truncate to config.max_length -> (x - mean) / (2 * std) if do_normalize.

    float32 (max_length, num_mel_bins): what ASTFeatureExtractor returns as ``input_values[i]``.
    """
    fbank = kaldi_fbank(waveform, num_mel_bins=config.num_mel_bins, sample_frequency=float(config.sampling_rate))
    return _normalize(pad_or_truncate(fbank, config.max_length), config)
