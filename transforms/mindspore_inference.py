"""Beam ModelHandler for AST checkpoints on MindSpore.

Modelled on apache_beam/ml/inference/*_inference.py: one handler for one
framework. RunInference keeps one loaded model per worker process and shares it
between the process's threads (Beam's ``shared.Shared``). MindSpore and MindNLP
are imported only inside ``load_model``, on the worker, never when the pipeline
is built.

Each example is a FeatureWindow; each PredictionResult's ``inference`` is a
ScoredWindow, or the exception that window alone raised (it becomes an error row
for its clip): a failing batch is retried one window at a time, so one bad clip
never loses its batchmates.

Failures of the input versus failures of the job
------------------------------------------------
Only failures caused by an input become rows: a window whose features the model
cannot take (wrong shape, NaN or infinite values; checked before the model is
called), or one window that the model rejects while its batchmates pass. A failure
of the machine or runtime is raised, so that the runner retries the bundle and the
run fails if it persists, instead of turning a night of inputs into error rows
that balance the accounting: MemoryError and any "out of memory"/device error,
RuntimeError (MindSpore's runtime raises it), OSError and SystemError, and a
model that fails on every window of a batch when they are retried one by one
(:class:`ModelFailure`). A model that fails on every window fails the job whatever the batch
size: windows the model rejected are counted across batches, and
:data:`MAX_CONSECUTIVE_FAILED_WINDOWS` of them in a row, with no window scored in between,
raise ModelFailure too (with ``--batch_size 1`` each batch holds one window, so the rule
within a batch never applies). Windows refused before the model is called (wrong shape,
NaN/Inf) do not count: they say nothing about the model.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from transforms.model.runtime_env import protobuf_backend_problem, quiet_mindspore_logs
from transforms.io.checkpoint_cache import fetch_checkpoint
from transforms.elements import FeatureWindow, ScoredWindow
from transforms.io.storage import resolve_storage_options

BACKENDS = ("native", "mindnlp")
_LOG = logging.getLogger(__name__)

# Exceptions of the machine or the runtime, never of one input (see the module docstring).
_JOB_FAILURE_TYPES = (MemoryError, RuntimeError, OSError, SystemError)
_JOB_FAILURE_WORDS = ("out of memory", "memory allocation", "device")


# Windows the model rejected in a row, across batches, with none scored in between, that make
# the model (not the inputs) the suspect. Real inputs the model rejects one by one are rare
# (their features were checked before the call); 16 in a row is a broken model or runtime.
MAX_CONSECUTIVE_FAILED_WINDOWS = 16


class ModelFailure(RuntimeError):
    """The model failed on every window of a batch, also one window at a time: the model or its
    runtime is broken, not the inputs."""


def is_job_failure(error: BaseException) -> bool:
    """True for an error of the machine or runtime (raised: the runner retries, the run fails),
    False for one an input can cause (an error row for that input's clip)."""
    if isinstance(error, _JOB_FAILURE_TYPES):
        return True
    text = str(error).lower()
    return any(word in text for word in _JOB_FAILURE_WORDS)


def input_problem(features, expected_shape) -> ValueError | None:
    """Why the model cannot take these features, or None."""
    shape = getattr(features, "shape", None)
    if shape != expected_shape:
        return ValueError(f"features have shape {shape}, the model takes {expected_shape}")
    if not np.isfinite(features).all():
        return ValueError(f"features hold {int(np.size(features) - np.isfinite(features).sum())} NaN or "
                          f"infinite values")
    return None


# --device auto tries these in order; the first MindSpore can use in this process wins.
_AUTO_ORDER = (("ascend", "Ascend"), ("gpu", "GPU"), ("cpu", "CPU"))


def resolve_device(device: str) -> str:
    """'auto' -> the best device MindSpore can use here (Ascend, then GPU, then CPU), logged."""
    if device != "auto":
        return device
    import mindspore as ms

    missing = []
    for name, target in _AUTO_ORDER:
        try:
            if ms.hal.is_available(target):
                break
        except Exception:  # a backend whose runtime libraries are missing reports by raising
            pass
        missing.append(target)
    else:
        name = "cpu"
    # One line, not MindSpore's warnings per missing backend: on a CPU machine none is a fault.
    _LOG.info("--device auto: using %s%s", name,
              f" ({', '.join(missing)} not available on this machine)" if missing else "")
    return name


def resolve_precision(device: str, precision: str) -> str:
    """Half precisions are for accelerators; on a CPU worker they fall back to fp32, logged."""
    if precision != "fp32" and device == "cpu":
        _LOG.warning("--precision %s is for GPU/Ascend; this worker runs on CPU in fp32", precision)
        return "fp32"
    return precision


# Device lists a runner or container may restrict a process to; MindSpore numbers the visible
# devices 0..n-1.
VISIBLE_DEVICES_ENV = {"gpu": "CUDA_VISIBLE_DEVICES", "ascend": "ASCEND_RT_VISIBLE_DEVICES"}
# Set per SDK process by Beam: the DirectRunner's multi_processing workers ("worker_3") and the
# SDK container's boot program ("sdk-0-0", "sdk-0-0_sibling_2" on Dataflow, "1-2" on Flink).
WORKER_ID_ENV = "WORKER_ID"


def process_index(worker_id: str | None) -> int | None:
    """A number that differs between the SDK processes of one machine: the integers in Beam's
    worker id, summed (only one of them varies between a machine's processes). None without one."""
    numbers = [int(n) for n in re.findall(r"\d+", worker_id or "")]
    return sum(numbers) if numbers else None


def choose_device_id(device_count: int, worker_id: str | None, visible_devices: str | None
                     ) -> tuple[int, str]:
    """(device id, why) for this worker process: round-robin over the devices it can see, by the
    process index the runner gives. Pure: the caller reads the environment and the device count.

    ``visible_devices`` (CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES) restricts the process to
    those devices, renumbered from 0; a runner or container that gives each process its own device
    this way needs no index."""
    if visible_devices is not None and visible_devices.strip():
        count = len([d for d in visible_devices.split(",") if d.strip()])
        if count == 1:
            return 0, f"the only device visible to this process ({visible_devices.strip()})"
    else:
        count = device_count
    count = max(int(count), 1)
    index = process_index(worker_id)
    if index is None:
        return 0, (f"no process index from the runner ({WORKER_ID_ENV} unset); with several worker "
                   "processes per machine give each its own device list")
    return index % count, f"worker {worker_id!r} -> process index {index} mod {count} devices"


def device_count(device: str) -> int:
    import mindspore as ms

    target = {"gpu": "GPU", "ascend": "Ascend"}.get(device)
    return int(ms.hal.device_count(target)) if target else 1


_process_device: dict[str, int] = {}
_process_device_lock = threading.Lock()


def process_device_id(device: str) -> int:
    """This process's accelerator, chosen once and logged once (MindSpore binds a process to one
    device; every model this process loads runs there)."""
    with _process_device_lock:
        if device not in _process_device:
            visible = os.environ.get(VISIBLE_DEVICES_ENV[device])
            count = device_count(device) if not (visible and visible.strip()) else 0
            chosen, why = choose_device_id(count, os.environ.get(WORKER_ID_ENV), visible)
            _LOG.info("this worker process (pid %d) uses %s:%d: %s", os.getpid(), device, chosen, why)
            _process_device[device] = chosen
        return _process_device[device]


def load_runner(checkpoint_dir: str, backend: str, batch_size: int, device: str = "cpu",
                precision: str = "fp32"):
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
        # CPU runs never look at accelerator ids.
        device_id = process_device_id(device) if device in VISIBLE_DEVICES_ENV else None
        return load_native_ast(checkpoint_dir, batch_size=batch_size, device=device,
                               precision=resolve_precision(device, precision), device_id=device_id)
    raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


class MindSporeASTModelHandler(ModelHandler[FeatureWindow, PredictionResult, Any]):
    def __init__(self, checkpoint_uri: str, backend: str = "native", batch_size: int = 8,
                 device: str = "auto", storage_options: Optional[dict] = None, precision: str = "fp32",
                 model_copies: int = 1, checkpoint_sha256: Optional[dict[str, str]] = None):
        """``checkpoint_sha256``: file name -> SHA-256 as the launcher inspected them
        (CheckpointInfo.file_sha256); a worker whose copy differs fails the job."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        # A fixed batch size: the compiled graph keeps one static shape.
        # model_copies > 1: Beam keeps that many models per machine, shared by its worker
        # processes (multi_process_shared). Each copy runs on the device of the process that
        # loaded it (process_device_id); Beam usually loads all copies in one process.
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size,
                         model_copies=model_copies if model_copies > 1 else None)
        self._checkpoint_uri = checkpoint_uri
        self._backend = backend
        self._batch_size = batch_size
        self._device = device
        self._precision = precision
        self._storage_options = storage_options
        self._checkpoint_sha256 = dict(checkpoint_sha256) if checkpoint_sha256 else None
        self._failure_streak = _FailureStreak()

    def load_model(self):
        started = time.perf_counter()
        # Workers a runner starts apart from the launcher (portable, Flink, Dataflow) did not
        # inherit its environment: MindSpore's start-up warnings held back here too.
        quiet_mindspore_logs()
        # Raises CheckpointDigestMismatch: a job must not label with weights it did not inspect.
        local = fetch_checkpoint(self._checkpoint_uri, resolve_storage_options(self._storage_options),
                                 self._checkpoint_sha256)
        runner = load_runner(local, self._backend, self._batch_size, self._device, self._precision)
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
            results[i] = input_problem(window.features, expected)
            if results[i] is None:
                good.append(i)
        if good:
            try:
                logits, pooled = model.predict(np.stack([batch[i].features for i in good]))
                outputs = list(zip(logits, pooled))
            except Exception as e:
                if is_job_failure(e):
                    raise   # the runner retries the bundle; persisting, the run fails
                # Perhaps one window is at fault: find it instead of failing its neighbours.
                _LOG.warning("batch of %d failed (%s: %s); retrying its windows one by one", len(good),
                             type(e).__name__, e)
                outputs = [self._predict_one(model, batch[i].features) for i in good]
                failed = [out for out in outputs if isinstance(out, Exception)]
                for out in failed:
                    if is_job_failure(out):
                        raise out from e
                if len(good) > 1 and len(failed) == len(good):
                    raise ModelFailure(
                        f"the model failed on all {len(good)} windows of a batch, and on each one "
                        f"alone ({type(e).__name__}: {e}): a broken model or runtime, not bad inputs") from e
                self._failure_streak.add(len(good) - len(failed), failed)
            else:
                self._failure_streak.add(len(good), [])
            first = True
            for i, out in zip(good, outputs):
                if not isinstance(out, Exception):
                    results[i] = _scored(batch[i], *out, opens_batch=first)
                    first = False
                else:
                    results[i] = out
        return [PredictionResult(example=w, inference=r) for w, r in zip(batch, results)]

    def __getstate__(self):   # the streak is per worker, not shipped with the pipeline
        state = dict(self.__dict__)
        state["_failure_streak"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._failure_streak = _FailureStreak()

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


class _FailureStreak:
    """Windows the model rejected in a row across this handler's batches (its threads share it)."""

    def __init__(self, limit: int = MAX_CONSECUTIVE_FAILED_WINDOWS):
        self._limit = limit
        self._count = 0
        self._lock = threading.Lock()

    def add(self, scored: int, failed: list[Exception]) -> None:
        """One batch's outcome: ``scored`` windows scored, ``failed`` the model's errors."""
        with self._lock:
            if scored:
                self._count = 0
            self._count += len(failed)
            count = self._count
        if failed and count >= self._limit:
            last = failed[-1]
            raise ModelFailure(
                f"the model failed on {count} windows in a row, across batches, scoring none "
                f"({type(last).__name__}: {last}): a broken model or runtime, not bad inputs") from last


def _scored(window: FeatureWindow, logits: np.ndarray, pooled: np.ndarray,
            opens_batch: bool = False) -> ScoredWindow:
    return ScoredWindow(clip=window.clip, window_index=window.window_index,
                        start_seconds=window.start_seconds, end_seconds=window.end_seconds,
                        logits=np.asarray(logits, np.float32), pooled=np.asarray(pooled, np.float32),
                        opens_batch=opens_batch)
