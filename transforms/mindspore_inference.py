"""Beam ModelHandler for AST checkpoints on MindSpore.

Modelled on apache_beam/ml/inference/*_inference.py: one handler for one
framework. RunInference keeps one loaded model per worker process and shares it
between the process's threads (Beam's ``shared.Shared``). MindSpore and MindNLP
are imported only inside ``load_model``, on the worker, never when the pipeline
is built.

Each example is a FeatureWindow; each PredictionResult's ``inference`` is a
ScoredWindow, or the exception that clip alone raised: a failing batch is
retried one window at a time, so one bad clip never loses its batchmates.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.model.runtime_env import protobuf_backend_problem
from transforms.io.checkpoint import local_checkpoint_dir
from transforms.elements import FeatureWindow, ScoredWindow
from transforms.io.storage import resolve_storage_options

BACKENDS = ("native", "mindnlp")
_LOG = logging.getLogger(__name__)


# --device auto tries these in order; the first MindSpore can use in this process wins.
_AUTO_ORDER = (("ascend", "Ascend"), ("gpu", "GPU"), ("cpu", "CPU"))


def resolve_device(device: str) -> str:
    """'auto' -> the best device MindSpore can use here (Ascend, then GPU, then CPU), logged."""
    if device != "auto":
        return device
    import mindspore as ms

    for name, target in _AUTO_ORDER:
        try:
            if ms.hal.is_available(target):
                _LOG.info("--device auto: using %s", name)
                return name
        except Exception:  # a backend whose runtime libraries are missing reports by raising
            continue
    return "cpu"


def resolve_precision(device: str, precision: str) -> str:
    """Half precisions are for accelerators; on a CPU worker they fall back to fp32, logged."""
    if precision != "fp32" and device == "cpu":
        _LOG.warning("--precision %s is for GPU/Ascend; this worker runs on CPU in fp32", precision)
        return "fp32"
    return precision


def claim_device_id(key: str, device_count: int) -> int:
    """The device for the next model copy on this machine: the copies of one run take the
    devices round-robin. The count lives in a lock file under the temp directory, because each
    copy is loaded in a different process (Beam's multi_process_shared servers)."""
    import fcntl

    folder = os.path.join(tempfile.gettempdir(), "audio_labelling_devices")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, re.sub(r"[^A-Za-z0-9_.-]", "_", key))
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        claimed = int(f.read() or 0)
        f.seek(0)
        f.truncate()
        f.write(str(claimed + 1))
    return claimed % max(device_count, 1)


def device_count(device: str) -> int:
    import mindspore as ms

    target = {"gpu": "GPU", "ascend": "Ascend"}.get(device)
    return int(ms.hal.device_count(target)) if target else 1


def load_runner(checkpoint_dir: str, backend: str, batch_size: int, device: str = "cpu",
                precision: str = "fp32", placement_key: str | None = None):
    """The model object behind RunInference; also used directly by tests and benchmarks."""
    problem = protobuf_backend_problem()
    if problem:
        raise RuntimeError(problem)
    if backend == "mindnlp":
        from transforms.model.ast_mindnlp import MindNLPASTRunner

        return MindNLPASTRunner(checkpoint_dir, batch_size=batch_size)
    if backend == "native":
        from transforms.model.ast_native import load_native_ast

        device = resolve_device(device)
        device_id = None
        if placement_key and device in ("gpu", "ascend"):
            device_id = claim_device_id(placement_key, device_count(device))
            _LOG.info("model copy placed on %s:%d", device, device_id)
        return load_native_ast(checkpoint_dir, batch_size=batch_size, device=device,
                               precision=resolve_precision(device, precision), device_id=device_id)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


class MindSporeASTModelHandler(ModelHandler[FeatureWindow, PredictionResult, Any]):
    def __init__(self, checkpoint_uri: str, backend: str = "native", batch_size: int = 8,
                 device: str = "auto", storage_options: Optional[dict] = None, precision: str = "fp32",
                 model_copies: int = 1, placement_key: str | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        # A fixed batch size: the compiled graph keeps one static shape.
        # model_copies > 1: Beam keeps that many models per machine, shared by its worker
        # processes (multi_process_shared), and load_model puts each on its own device.
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size,
                         model_copies=model_copies if model_copies > 1 else None)
        self._checkpoint_uri = checkpoint_uri
        self._backend = backend
        self._batch_size = batch_size
        self._device = device
        self._precision = precision
        # Only several copies per machine need placing; the key (the run id) scopes the count.
        self._placement_key = placement_key if model_copies > 1 else None
        self._storage_options = storage_options

    def load_model(self):
        started = time.perf_counter()
        local = local_checkpoint_dir(self._checkpoint_uri,
                                     resolve_storage_options(self._storage_options))
        runner = load_runner(local, self._backend, self._batch_size, self._device, self._precision,
                             self._placement_key)
        _LOG.info("loaded %s AST from %s in %.1f s", self._backend, self._checkpoint_uri,
                  time.perf_counter() - started)
        return runner

    def run_inference(self, batch: Sequence[FeatureWindow], model,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        # A method, not attributes: with model_copies the model is a multi_process_shared proxy,
        # which forwards method calls only.
        expected = model.input_shape()
        results: list[Any] = [None] * len(batch)
        good = []
        for i, window in enumerate(batch):
            shape = getattr(window.features, "shape", None)
            if shape != expected:
                results[i] = ValueError(f"features have shape {shape}, the model takes {expected}")
            else:
                good.append(i)
        if good:
            try:
                logits, pooled = model.predict(np.stack([batch[i].features for i in good]))
                outputs = list(zip(logits, pooled))
            except Exception:  # find the clip at fault instead of failing its neighbours
                _LOG.warning("batch of %d failed; retrying its windows one by one", len(good),
                             exc_info=True)
                outputs = [self._predict_one(model, batch[i].features) for i in good]
            first = True
            for i, out in zip(good, outputs):
                if not isinstance(out, Exception):
                    results[i] = _scored(batch[i], *out, opens_batch=first)
                    first = False
                else:
                    results[i] = out
        return [PredictionResult(example=w, inference=r) for w, r in zip(batch, results)]

    @staticmethod
    def _predict_one(model, features: np.ndarray):
        try:
            logits, pooled = model.predict(features[None])
            return logits[0], pooled[0]
        except Exception as e:
            return e

    def get_num_bytes(self, batch: Sequence[FeatureWindow]) -> int:
        return sum(w.features.nbytes for w in batch)

    def get_metrics_namespace(self) -> str:
        return "MindSporeAST"


def _scored(window: FeatureWindow, logits: np.ndarray, pooled: np.ndarray,
            opens_batch: bool = False) -> ScoredWindow:
    return ScoredWindow(clip=window.clip, window_index=window.window_index,
                        start_seconds=window.start_seconds, end_seconds=window.end_seconds,
                        logits=np.asarray(logits, np.float32), pooled=np.asarray(pooled, np.float32),
                        opens_batch=opens_batch)
