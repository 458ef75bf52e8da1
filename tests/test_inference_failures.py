"""Failures of an input become rows; failures of the machine or runtime fail the run.

The model is the real tiny MindSpore AST (generated weights). Where a failure of the runtime
is needed (out of memory on every batch, a device lost), a thin test double wraps that real
network and makes its predict raise: a real machine cannot be made to run out of memory on
demand in a test.
"""
import os

import numpy as np
import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import run
from pipeline.runs.publish import finished_runs
from pipeline.runs.layout import manifest_path
from pipeline.runs.summary import read_table
from transforms import mindspore_inference
from transforms.elements import ClipInfo, FeatureWindow, ScoredWindow
from transforms.mindspore_inference import MindSporeASTModelHandler, ModelFailure, is_job_failure

CLIP = ClipInfo(clip_id="a.wav", source_uri="a.wav", duration_seconds=1.0, original_sample_rate=16000, channels=1)


@pytest.fixture(scope="module")
def real_model(tiny_checkpoint):
    return mindspore_inference.load_runner(tiny_checkpoint, "native", batch_size=4)


class Wrapped:
    """The real network; ``fail(batch)`` may raise before it is called."""

    def __init__(self, real, fail):
        self._real, self._fail = real, fail
        self.calls = 0

    def input_shape(self):
        return self._real.input_shape()

    def predict(self, features):
        self.calls += 1
        self._fail(features)
        return self._real.predict(features)


def windows(n, seed=0):
    rng = np.random.default_rng(seed)
    return [FeatureWindow(CLIP, i, i * 10.24, (i + 1) * 10.24, rng.standard_normal((1024, 128)).astype(np.float32))
            for i in range(n)]


def infer(model, batch):
    return [r.inference for r in MindSporeASTModelHandler("unused", batch_size=4).run_inference(batch, model)]


def test_inputs_the_model_cannot_take_are_rows_and_their_batchmates_are_scored(real_model):
    batch = windows(4)
    bad_shape = FeatureWindow(CLIP, 1, 10.24, 20.48, np.zeros((1000, 128), np.float32))
    nan = batch[2].features.copy()
    nan[5, 7] = np.nan
    batch[1], batch[2] = bad_shape, FeatureWindow(CLIP, 2, 20.48, 30.72, nan)
    out = infer(real_model, batch)
    assert isinstance(out[0], ScoredWindow) and isinstance(out[3], ScoredWindow)
    assert isinstance(out[1], ValueError) and "shape (1000, 128)" in str(out[1])
    assert isinstance(out[2], ValueError) and "1 NaN or infinite values" in str(out[2])
    expected, _ = real_model.predict(np.stack([batch[0].features, batch[3].features]))
    np.testing.assert_allclose(out[0].logits, expected[0], atol=1e-5)


def test_one_window_the_model_rejects_is_a_row(real_model):
    poisoned = windows(4)
    marker = poisoned[2].features[0, 0]

    def reject_marked(features):
        if np.any(features[:, 0, 0] == marker):
            raise ValueError("this window's features are out of the model's range")

    out = infer(Wrapped(real_model, reject_marked), poisoned)
    assert [type(o).__name__ for o in out] == ["ScoredWindow", "ScoredWindow", "ValueError", "ScoredWindow"]


def test_out_of_memory_is_raised_not_recorded(real_model):
    def out_of_memory(features):
        raise MemoryError(f"out of memory allocating a batch of {len(features)} (test double)")

    model = Wrapped(real_model, out_of_memory)
    with pytest.raises(MemoryError):
        infer(model, windows(4))
    assert model.calls == 1                 # not retried window by window into error rows


@pytest.mark.parametrize("error", [RuntimeError("Device(id:0) lost: Ascend runtime error 507899"),
                                   ValueError("CUDA error: an illegal memory access on device 0")])
def test_runtime_and_device_errors_are_raised(real_model, error):
    def broken(features):
        raise error

    with pytest.raises(type(error)):
        infer(Wrapped(real_model, broken), windows(3))
    assert is_job_failure(error) and not is_job_failure(ValueError("features have shape (3,)"))


def test_a_model_that_fails_on_every_window_is_raised(real_model):
    def always(features):
        raise ValueError("unexpected input")

    model = Wrapped(real_model, always)
    with pytest.raises(ModelFailure, match="failed on all 4 windows of a batch"):
        infer(model, windows(4))
    assert model.calls == 5                 # the batch, then each window alone


def test_a_run_whose_model_runs_out_of_memory_fails_and_publishes_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(6):
        write_audio(str(audio / f"clip_{i}.wav"), tone(1.0 + i, 16000, 300.0 + 40 * i) + noise(1.0 + i, 16000, i),
                    16000)
    real_load = mindspore_inference.load_runner
    batches = []

    def load_oom_model(*args, **kwargs):
        def out_of_memory(features):
            batches.append(len(features))
            raise MemoryError("out of memory (test double around the real network)")
        return Wrapped(real_load(*args, **kwargs), out_of_memory)

    # The DirectRunner runs in this process, so the handler's load_model finds the double.
    monkeypatch.setattr(mindspore_inference, "load_runner", load_oom_model)
    out = str(tmp_path / "out")
    with pytest.raises(MemoryError, match="out of memory"):
        run(["--input", str(audio), "--output", out, "--model", tiny_checkpoint, "--batch_size", "2",
             "--run_id", "oom", "--max_error_fraction", "1.0"])
    assert batches, "the model was never called"
    assert finished_runs(out) == []
    assert not os.path.exists(manifest_path(out, "oom"))
    # No error rows pretend the inputs were bad (nothing was committed at all).
    assert read_table(out, "oom", "errors").num_rows == 0
    assert read_table(out, "oom", "clips").num_rows == 0
