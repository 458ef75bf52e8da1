"""Benchmark: transforms.audio.fbank vs transformers' ASTFeatureExtractor numpy path, per 10-s clip per core.

Usage:  python benchmarks/bench_fbank.py [--batch 32] [--hf-clips 4] [--repeats 7] [--seconds 10] [--pin-cpu]

Prints one JSON object. Every BLAS/OpenMP pool is limited to one thread before numpy is imported, so the
figures are single-core ("per core"); --pin-cpu additionally binds the process to one CPU. Timings are
the best of --repeats runs (the least disturbed by other load on the machine).
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from transforms.audio.fbank import FeatureConfig, ast_input_features, kaldi_fbank, kaldi_fbank_batch  # noqa: E402

SR = 16000
BAR_MS_PER_CLIP = 3.5


def make_clips(count: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Audio-like clips: noise + a few tones + a chirp at random levels, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    clips = np.empty((count, n), dtype=np.float32)
    for i in range(count):
        x = rng.uniform(0.001, 0.1) * rng.standard_normal(n)
        for f in rng.uniform(60, 6000, size=3):
            x += rng.uniform(0.01, 0.3) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        f0, f1 = rng.uniform(50, 500), rng.uniform(2000, 7900)
        x += 0.2 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t * t))
        clips[i] = np.clip(x, -1.0, 1.0)
    return clips


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def hf_numpy_extractor():
    """ASTFeatureExtractor forced onto its numpy path (what we match)."""
    import transformers.models.audio_spectrogram_transformer.feature_extraction_audio_spectrogram_transformer as ast_fe

    ast_fe.is_speech_available = lambda: False
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "At least one mel filter has all zero values" (filter 3, expected)
        fe = ast_fe.ASTFeatureExtractor()
    assert hasattr(fe, "mel_filters"), "numpy path not selected"
    return fe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per kaldi_fbank_batch call")
    parser.add_argument("--hf-clips", type=int, default=4, help="clips timed through the (slow) HF path")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pin-cpu", action="store_true", help="also bind the process to a single CPU")
    args = parser.parse_args()

    if args.pin_cpu and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    clips = make_clips(args.batch, args.seconds)
    config = FeatureConfig()

    kaldi_fbank_batch(clips[:2])  # warm the lru caches and allocator
    ours_batch_s = best_of(lambda: kaldi_fbank_batch(clips), args.repeats)
    ours_single_s = best_of(lambda: [kaldi_fbank(c) for c in clips], max(1, args.repeats // 2))
    ours_full_s = best_of(lambda: [ast_input_features(c, config) for c in clips], max(1, args.repeats // 2))

    fe = hf_numpy_extractor()
    hf_clips = clips[: max(1, min(args.hf_clips, args.batch))]
    num_frames = 1 + (clips.shape[1] - 400) // 160
    fe._extract_fbank_features(hf_clips[0], max_length=num_frames)  # warm-up
    hf_s = best_of(lambda: [fe._extract_fbank_features(c, max_length=num_frames) for c in hf_clips],
                   max(1, min(3, args.repeats)))

    ours_fbank = kaldi_fbank_batch(hf_clips)
    hf_fbank = np.stack([fe._extract_fbank_features(c, max_length=num_frames) for c in hf_clips])
    hf_input_values = fe(list(hf_clips), sampling_rate=SR, return_tensors="np")["input_values"]
    ours_input_values = np.stack([ast_input_features(c, config) for c in hf_clips])

    ours_ms = ours_batch_s / len(clips) * 1e3
    hf_ms = hf_s / len(hf_clips) * 1e3
    result = {
        "clip_seconds": args.seconds,
        "frames_per_clip": int(num_frames),
        "threads": 1,
        "pinned_cpu": bool(args.pin_cpu),
        "batch": int(len(clips)),
        "ours_batch_ms_per_clip_per_core": round(ours_ms, 3),
        "ours_single_ms_per_clip_per_core": round(ours_single_s / len(clips) * 1e3, 3),
        "ours_ast_input_features_ms_per_clip_per_core": round(ours_full_s / len(clips) * 1e3, 3),
        "hf_numpy_clips": int(len(hf_clips)),
        "hf_numpy_ms_per_clip_per_core": round(hf_ms, 3),
        "speedup_vs_hf": round(hf_ms / ours_ms, 1),
        "ratio_ours_over_hf": round(ours_ms / hf_ms, 5),
        "max_abs_diff_fbank": float(np.abs(ours_fbank - hf_fbank).max()),
        "max_abs_diff_input_values": float(np.abs(ours_input_values - hf_input_values).max()),
        "bar_ms_per_clip": BAR_MS_PER_CLIP,
        "meets_bar": bool(ours_ms <= BAR_MS_PER_CLIP),
        "cpu": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
