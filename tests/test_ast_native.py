"""Native MindSpore AST (transforms/model/ast_native.py): parity with MindNLP, static shapes, loading errors.

MindNLP is imported inside the tests that need it (it redirects ``import torch`` to its
MindSpore shim for the whole process); nothing here imports real torch.
"""
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest

from pipeline.demo.checkpoint import FULL_SIZE, TinyASTSpec, label_names, write_checkpoint
from transforms.model.ast_native import CheckpointError, NativeASTRunner, load_native_ast

TINY = TinyASTSpec()


def _features(n: int, spec: TinyASTSpec = TINY, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, spec.max_length, spec.num_mel_bins)).astype(np.float32)


def _mindnlp_reference(checkpoint_dir: str, features: np.ndarray,
                       full_forward: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(logits, pooled) from MindNLP's ASTForAudioClassification (PyNative) on the same input.

    pooled is ASTModel's pooler_output ((h[:, 0] + h[:, 1]) / 2 after the final LayerNorm).
    With full_forward=False the logits are classifier(pooled), which is exactly what
    ASTForAudioClassification.forward computes, at the cost of one encoder pass instead of two.
    """
    # Beam's inference module (imported by other tests at collection) loads real torch; this
    # helper drops it before importing MindNLP, as the MindNLP backend does in workers.
    from transforms.model.ast_mindnlp import import_mindnlp_transformers

    torch, transformers = import_mindnlp_transformers()
    ASTForAudioClassification = transformers.ASTForAudioClassification

    assert "mindtorch" in torch.__file__ or "mindnlp" in torch.__file__, (
        "real torch was imported before mindnlp in this process")
    model = ASTForAudioClassification.from_pretrained(checkpoint_dir).eval()
    x = torch.tensor(features)
    with torch.no_grad():
        pooled = model.audio_spectrogram_transformer(x).pooler_output
        logits = model(x).logits if full_forward else model.classifier(pooled)
    return logits.numpy().astype(np.float32), pooled.numpy().astype(np.float32)


@pytest.fixture(scope="module")
def tiny_runner(tiny_checkpoint) -> NativeASTRunner:
    return load_native_ast(tiny_checkpoint, batch_size=2)


# --------------------------------------------------------------------------- parity


def test_tiny_parity_with_mindnlp_padded_partial_batch(tiny_checkpoint, tiny_runner):
    x = _features(3)                       # 3 clips on batch_size 2: second chunk is padded
    logits, pooled = tiny_runner.predict(x)
    assert logits.shape == (3, TINY.num_labels) and logits.dtype == np.float32
    assert pooled.shape == (3, TINY.hidden_size) and pooled.dtype == np.float32

    ref_logits, ref_pooled = _mindnlp_reference(tiny_checkpoint, x)
    logit_diff = float(np.abs(logits - ref_logits).max())
    pooled_diff = float(np.abs(pooled - ref_pooled).max())
    print(f"tiny parity: max|logits diff|={logit_diff:.3e} max|pooled diff|={pooled_diff:.3e}")
    assert logit_diff <= 1e-5
    assert pooled_diff <= 1e-5
    # The clips are different, so the rows must differ (padding rows were dropped, not reused).
    assert not np.allclose(logits[0], logits[2])


def test_rows_do_not_depend_on_batch_neighbours(tiny_runner):
    x = _features(3, seed=7)
    together, _ = tiny_runner.predict(x)
    alone = np.concatenate([tiny_runner.predict(x[i:i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)


def test_full_size_parity_with_mindnlp(tmp_path):
    ckpt = write_checkpoint(str(tmp_path / "full_ast"), FULL_SIZE, seed=3)
    x = _features(1, FULL_SIZE, seed=5)
    t0 = time.perf_counter()
    runner = load_native_ast(ckpt, batch_size=1)
    t1 = time.perf_counter()
    logits, pooled = runner.predict(x)
    t2 = time.perf_counter()
    assert runner.labels == label_names(FULL_SIZE.num_labels)
    assert (runner.hidden_size, runner.max_length, runner.num_mel_bins) == (768, 1024, 128)
    del runner

    ref_logits, ref_pooled = _mindnlp_reference(ckpt, x, full_forward=False)
    t3 = time.perf_counter()
    logit_diff = float(np.abs(logits - ref_logits).max())
    pooled_diff = float(np.abs(pooled - ref_pooled).max())
    print(f"full-size parity: max|logits diff|={logit_diff:.3e} max|pooled diff|={pooled_diff:.3e} "
          f"(native load+compile {t1 - t0:.1f}s, native clip {t2 - t1:.1f}s, mindnlp {t3 - t2:.1f}s)")
    assert logits.shape == (1, 527)
    assert logit_diff <= 1e-4
    assert pooled_diff <= 1e-4


# --------------------------------------------------------------------------- static shapes


def test_no_recompile_for_any_n(tiny_checkpoint):
    runner = load_native_ast(tiny_checkpoint, batch_size=2)
    assert runner.compile_count == 1                        # the warm-up batch
    timings = {}
    for n in (1, 2, 3, 5):
        x = _features(n, seed=n)
        first = time.perf_counter()
        logits, pooled = runner.predict(x)
        first = time.perf_counter() - first
        again = time.perf_counter()
        runner.predict(x)
        again = time.perf_counter() - again
        timings[n] = (first, again)
        assert logits.shape == (n, TINY.num_labels) and pooled.shape == (n, TINY.hidden_size)
        assert runner.compile_count == 1, f"recompiled for n={n}"
    if runner.graph_cache_entries >= 0:                     # MindSpore's own compile cache agrees
        assert runner.graph_cache_entries == 1
    # Informational only (wall time is not asserted): a first call of a new n costs the
    # same as a repeat, i.e. no compile happened.
    print("predict seconds (first call, repeat) per n:",
          {n: (round(a, 3), round(b, 3)) for n, (a, b) in timings.items()})

    # The counter does see a new shape if one reaches the compiled network.
    runner._run_batch(np.zeros((3, TINY.max_length, TINY.num_mel_bins), np.float32))
    assert runner.compile_count == 2


def test_predict_is_thread_safe(tiny_runner):
    x = _features(5, seed=11)
    expected, _ = tiny_runner.predict(x)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = tiny_runner.predict(x)[0]
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_runner_attributes(tiny_runner):
    assert tiny_runner.labels == label_names(TINY.num_labels)
    assert tiny_runner.batch_size == 2
    assert tiny_runner.max_length == TINY.max_length
    assert tiny_runner.num_mel_bins == TINY.num_mel_bins
    assert tiny_runner.hidden_size == TINY.hidden_size


def test_rejects_wrong_feature_shape(tiny_runner):
    with pytest.raises(ValueError, match="features must have shape"):
        tiny_runner.predict(np.zeros((2, 100, TINY.num_mel_bins), np.float32))
    with pytest.raises(ValueError):
        tiny_runner.predict(np.zeros((0, TINY.max_length, TINY.num_mel_bins), np.float32))


# --------------------------------------------------------------------------- loading errors


def test_pytorch_bin_only_is_rejected_with_safetensors_hint(tmp_path, tiny_checkpoint):
    d = tmp_path / "bin_only"
    d.mkdir()
    shutil.copy(os.path.join(tiny_checkpoint, "config.json"), d / "config.json")
    (d / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(CheckpointError, match="safetensors") as err:
        load_native_ast(str(d))
    assert "pytorch_model.bin" in str(err.value)


def _rewrite_state(src: str, dst, edit) -> str:
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(os.path.join(src, "model.safetensors"))
    edit(state)
    save_file(state, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    return str(dst)


def test_misshaped_parameter_is_named(tmp_path, tiny_checkpoint):
    name = "audio_spectrogram_transformer.encoder.layer.1.intermediate.dense.weight"

    def edit(state):
        state[name] = np.zeros((TINY.intermediate_size + 1, TINY.hidden_size), np.float32)

    d = _rewrite_state(tiny_checkpoint, tmp_path / "misshaped", edit)
    with pytest.raises(CheckpointError, match="shape") as err:
        load_native_ast(d)
    assert name in str(err.value)


def test_missing_and_unexpected_parameters_are_named(tmp_path, tiny_checkpoint):
    gone = "classifier.dense.bias"

    def edit(state):
        del state[gone]
        state["some.extra.weight"] = np.zeros(3, np.float32)

    d = _rewrite_state(tiny_checkpoint, tmp_path / "missing", edit)
    with pytest.raises(CheckpointError) as err:
        load_native_ast(d)
    assert gone in str(err.value) and "missing" in str(err.value)
    assert "some.extra.weight" in str(err.value) and "unexpected" in str(err.value)


def test_config_mismatch_with_weights_is_reported(tmp_path, tiny_checkpoint):
    d = tmp_path / "wrong_config"
    shutil.copytree(tiny_checkpoint, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["hidden_size"] = 64
    cfg["num_attention_heads"] = 4
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="audio_spectrogram_transformer.embeddings.cls_token"):
        load_native_ast(str(d))


def test_fp16_on_cpu_is_refused(tiny_checkpoint):
    with pytest.raises(ValueError, match="fp32"):
        load_native_ast(tiny_checkpoint, precision="fp16")
    with pytest.raises(ValueError, match="device"):
        load_native_ast(tiny_checkpoint, device="tpu")
