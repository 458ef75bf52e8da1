"""transforms.audio.fbank against transformers' ASTFeatureExtractor (its numpy path).

The reference runs in a subprocess: importing transformers' feature extractor imports real torch, and
this pytest process must never import real torch (the MindNLP tests redirect ``torch`` and break if
the real one was imported first).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from transforms.audio.fbank import (
    FRAME_LENGTH_SAMPLES,
    FRAME_SHIFT_SAMPLES,
    FeatureConfig,
    WaveformTooShortError,
    _mel_banks,
    ast_input_features,
    kaldi_fbank,
    kaldi_fbank_batch,
    pad_or_truncate,
)

SR = 16000
DURATIONS_S = (1, 5, 12)  # 12 s = 1198 frames: exercises truncation to 1024; 1 s and 5 s exercise padding
SIGNALS = ("white_noise", "pure_tone", "chirp", "silence", "tone_on_dc")
PARITY_ATOL = 1e-4
LOG_EPS = np.log(np.finfo(np.float32).eps)  # -15.942385


def make_signal(kind: str, seconds: int) -> np.ndarray:
    """Deterministic float32 test signals in [-1, 1]."""
    n = seconds * SR
    t = np.arange(n) / SR
    if kind == "white_noise":
        x = 0.1 * np.random.default_rng(seconds).standard_normal(n)
    elif kind == "pure_tone":
        x = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    elif kind == "chirp":  # linear sweep 50 Hz -> 7950 Hz over the clip
        f0, f1 = 50.0, 7950.0
        x = 0.5 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) / (2 * seconds) * t * t))
    elif kind == "silence":
        x = np.zeros(n)
    elif kind == "tone_on_dc":  # a large DC offset that per-frame DC removal has to cancel
        x = 0.6 + 0.05 * np.sin(2 * np.pi * 1000.0 * t)
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


def case_name(kind: str, seconds: int) -> str:
    return f"{kind}_{seconds}s"


# Runs in a fresh interpreter: argv[1] = input .npz of float32 waveforms, argv[2] = output .npz.
HF_REFERENCE_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import transformers.models.audio_spectrogram_transformer.feature_extraction_audio_spectrogram_transformer as ast_fe

    # Force the numpy path even where torchaudio is installed: the module looks this name up at call time,
    # and __init__ only builds mel_filters / window for the numpy path.
    ast_fe.is_speech_available = lambda: False
    spectrogram_calls = []
    _spectrogram = ast_fe.spectrogram

    def counting_spectrogram(*args, **kwargs):
        spectrogram_calls.append(1)
        return _spectrogram(*args, **kwargs)

    ast_fe.spectrogram = counting_spectrogram
    fe = ast_fe.ASTFeatureExtractor()  # AudioSet defaults: 128 bins, 1024 frames, mean/std, normalise
    assert hasattr(fe, "mel_filters"), "numpy path not selected"

    inputs = np.load(sys.argv[1])
    out = {"mel_filters": fe.mel_filters, "window": fe.window}
    for name in inputs.files:
        x = inputs[name]
        before = len(spectrogram_calls)
        n_frames = 1 + (len(x) - 400) // 160
        out["fbank__" + name] = fe._extract_fbank_features(x, max_length=n_frames)  # raw, no pad/truncate
        out["input_values__" + name] = fe(x, sampling_rate=16000, return_tensors="np")["input_values"][0]
        assert len(spectrogram_calls) == before + 2, "numpy spectrogram path was not used"
    np.savez(sys.argv[2], **out)
    """
)


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    """One subprocess computes the HF numpy-path features for every parity case."""
    work = tmp_path_factory.mktemp("hf_fbank")
    inputs = {case_name(k, s): make_signal(k, s) for k in SIGNALS for s in DURATIONS_S}
    np.savez(work / "inputs.npz", **inputs)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", HF_REFERENCE_SCRIPT, str(work / "inputs.npz"), str(work / "reference.npz")],
        capture_output=True, text=True, timeout=600, env=env,
    )
    if proc.returncode != 0:
        pytest.fail(f"HF reference subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    with np.load(work / "reference.npz") as ref:
        return {key: ref[key] for key in ref.files}


@pytest.mark.parametrize("seconds", DURATIONS_S)
@pytest.mark.parametrize("kind", SIGNALS)
def test_fbank_matches_hf_numpy_path(hf_reference, kind, seconds):
    x = make_signal(kind, seconds)
    expected = hf_reference["fbank__" + case_name(kind, seconds)]
    got = kaldi_fbank(x)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (1 + (len(x) - 400) // 160, 128)
    np.testing.assert_allclose(got, expected, rtol=0, atol=PARITY_ATOL)


@pytest.mark.parametrize("seconds", DURATIONS_S)
@pytest.mark.parametrize("kind", SIGNALS)
def test_input_features_match_hf_input_values(hf_reference, kind, seconds):
    x = make_signal(kind, seconds)
    expected = hf_reference["input_values__" + case_name(kind, seconds)]
    got = ast_input_features(x, FeatureConfig())
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (1024, 128)
    np.testing.assert_allclose(got, expected, rtol=0, atol=PARITY_ATOL)


def test_mel_bank_and_window_match_hf(hf_reference):
    np.testing.assert_allclose(_mel_banks(128, 512, 16000.0), hf_reference["mel_filters"], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.hanning(400), hf_reference["window"])  # symmetric Hann, as we use


def test_mel_filter_3_is_empty(hf_reference):
    # Kaldi numbers mel bins from 0. At 128 bins / 512-point FFT / 16 kHz, filter 3 spans 62.96-93.01 Hz,
    # strictly between FFT bins 2 (62.5 Hz) and 3 (93.75 Hz), so it has no weight anywhere; it is the
    # only empty one. HF warns about it ("At least one mel filter has all zero values") and keeps it.
    banks = _mel_banks(128, 512, 16000.0)
    assert np.flatnonzero(banks.max(axis=0) == 0.0).tolist() == [3]
    assert np.flatnonzero(hf_reference["mel_filters"].max(axis=0) == 0.0).tolist() == [3]
    fbank = kaldi_fbank(make_signal("white_noise", 1))
    assert np.all(fbank[:, 3] == np.float32(LOG_EPS))
    assert np.all(fbank[:, [2, 4]] > LOG_EPS)  # its neighbours do see energy


def test_silence_is_log_eps_everywhere():
    fbank = kaldi_fbank(np.zeros(SR, dtype=np.float32))
    assert np.all(fbank == np.float32(LOG_EPS))


@pytest.mark.parametrize("n", [400, 401, 559, 560, 561, 16000, 16399, 16400, 160000])
def test_frame_count_snip_edges(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    fbank = kaldi_fbank(x)
    assert fbank.shape == (1 + (n - FRAME_LENGTH_SAMPLES) // FRAME_SHIFT_SAMPLES, 128)


def test_400_samples_make_one_frame_and_399_raise():
    x = np.random.default_rng(0).standard_normal(400).astype(np.float32)
    assert kaldi_fbank(x).shape == (1, 128)
    with pytest.raises(WaveformTooShortError) as info:
        kaldi_fbank(x[:399])
    message = str(info.value)
    assert "399" in message and "400" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(WaveformTooShortError):
        kaldi_fbank(np.zeros(0, dtype=np.float32))
    with pytest.raises(WaveformTooShortError):
        kaldi_fbank_batch(np.zeros((2, 399), dtype=np.float32))
    with pytest.raises(WaveformTooShortError):
        ast_input_features(x[:399], FeatureConfig())


@pytest.mark.parametrize("batch,seconds", [(3, 10), (23, 1)])  # 1-s clips: several clips per chunk + a partial one
def test_batch_equals_single(batch, seconds):
    rng = np.random.default_rng(batch)
    waves = (0.2 * rng.standard_normal((batch, seconds * SR))).astype(np.float32)
    waves[1] = make_signal("chirp", seconds)
    got = kaldi_fbank_batch(waves)
    assert got.shape == (batch, 1 + (seconds * SR - 400) // 160, 128)
    assert got.dtype == np.float32
    for i in range(batch):
        # Same arithmetic per row; the tolerance only allows BLAS to pick another kernel for another size.
        np.testing.assert_allclose(got[i], kaldi_fbank(waves[i]), rtol=0, atol=1e-6)


def test_long_clip_chunking_matches_unchunked(monkeypatch):
    # Clips longer than _CHUNK_FRAMES frames are processed in runs of frames; the 12-s parity cases cover
    # this against HF, here the chunk boundaries are checked against one unchunked pass.
    import transforms.audio.fbank as fbank_module

    x = make_signal("chirp", 30)
    chunked = kaldi_fbank_batch(np.stack([x, x[::-1]]))
    monkeypatch.setattr(fbank_module, "_CHUNK_FRAMES", 10**6)
    whole = kaldi_fbank_batch(np.stack([x, x[::-1]]))
    assert chunked.shape == whole.shape == (2, 2998, 128)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)


def test_input_dtype_and_shape_handling():
    x64 = make_signal("chirp", 1).astype(np.float64) + 1e-9  # not representable in float32
    # ASTFeatureExtractor casts float64 input to float32 first; so do we.
    np.testing.assert_array_equal(kaldi_fbank(x64), kaldi_fbank(x64.astype(np.float32)))
    with pytest.raises(ValueError):
        kaldi_fbank(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError):
        kaldi_fbank_batch(np.zeros(16000, dtype=np.float32))
    with pytest.raises(ValueError):
        kaldi_fbank(np.zeros(16000, dtype=np.complex64))


def test_pad_or_truncate():
    fbank = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    padded = pad_or_truncate(fbank, 8)
    assert padded.shape == (8, 3) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:5], fbank)
    assert np.all(padded[5:] == 0.0)
    np.testing.assert_array_equal(pad_or_truncate(fbank, 2), fbank[:2])
    np.testing.assert_array_equal(pad_or_truncate(fbank, 5), fbank)
    batched = pad_or_truncate(np.stack([fbank, fbank]), 7)
    assert batched.shape == (2, 7, 3)


def test_ast_input_features_config():
    x = make_signal("white_noise", 1)
    fbank = kaldi_fbank(x)
    raw = ast_input_features(x, FeatureConfig(max_length=50, do_normalize=False))
    np.testing.assert_array_equal(raw, fbank[:50])
    cfg = FeatureConfig(max_length=200, mean=-3.0, std=2.0)
    norm = ast_input_features(x, cfg)
    assert norm.shape == (200, 128)
    np.testing.assert_allclose(norm[:98], (fbank + 3.0) / 4.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(norm[98:], 3.0 / 4.0, rtol=0, atol=1e-6)  # padding is normalised too, as in HF


# An AST checkpoint's preprocessor_config.json (MIT/ast-finetuned-audioset-10-10-0.4593), with one field changed.
AST_PREPROCESSOR = {
    "do_normalize": True,
    "feature_extractor_type": "ASTFeatureExtractor",
    "feature_size": 1,
    "max_length": 512,
    "mean": -4.2677393,
    "num_mel_bins": 128,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "sampling_rate": 16000,
    "std": 4.5689974,
}


def test_feature_config_from_full_preprocessor_config():
    cfg = FeatureConfig.from_preprocessor_config(AST_PREPROCESSOR, {"max_length": 1024, "num_mel_bins": 64})
    assert cfg == FeatureConfig(num_mel_bins=128, max_length=512, mean=-4.2677393, std=4.5689974,
                                sampling_rate=16000, do_normalize=True)
    custom = FeatureConfig.from_preprocessor_config(
        {"num_mel_bins": 64, "max_length": 100, "mean": 1.5, "std": 2.5, "sampling_rate": 8000, "do_normalize": False}
    )
    assert custom == FeatureConfig(64, 100, 1.5, 2.5, 8000, False)


def test_feature_config_defaults():
    assert FeatureConfig.from_preprocessor_config(None) == FeatureConfig()
    assert FeatureConfig.from_preprocessor_config({}, None) == FeatureConfig()
    cfg = FeatureConfig()
    assert (cfg.num_mel_bins, cfg.max_length, cfg.mean, cfg.std, cfg.sampling_rate, cfg.do_normalize) == (
        128, 1024, -4.2677393, 4.5689974, 16000, True)


def test_feature_config_model_config_fallback():
    cfg = FeatureConfig.from_preprocessor_config({"mean": -5.0, "std": 3.0}, {"max_length": 300, "num_mel_bins": 64})
    assert (cfg.max_length, cfg.num_mel_bins, cfg.mean, cfg.std) == (300, 64, -5.0, 3.0)
    cfg = FeatureConfig.from_preprocessor_config(None, {"max_length": 128})
    assert cfg == FeatureConfig(max_length=128)
    # explicit nulls count as absent
    cfg = FeatureConfig.from_preprocessor_config({"max_length": None}, {"max_length": 256})
    assert cfg.max_length == 256


def test_feature_config_rejects_nonsense():
    with pytest.raises(ValueError):
        FeatureConfig(max_length=0)
    with pytest.raises(ValueError):
        FeatureConfig(std=0.0)


def test_module_imports_no_heavy_frameworks():
    # The fbank module must stay importable on workers without torch/transformers/beam/mindspore.
    script = (
        "import sys, transforms.audio.fbank\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'torchaudio', 'transformers', 'apache_beam', 'mindspore', 'mindnlp'})\n"
        "print(','.join(bad))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
