"""Builds and locates the AVX2 CPU kernels (kernels/ast_cpu_kernels.cc) for the native AST.

MindSpore 2.7's CPU kernels for erf, LayerNorm and Softmax run single-threaded and are slow
on AVX2-only hosts (see ast_native.py's notes). ``kernel_library()`` compiles
``ast_cpu_kernels.cc`` once per machine with the system C++ compiler into the per-machine
cache (``<cache>/kernels/<source sha256 + flags>/ast_cpu_kernels.so``) and returns its path;
MindSpore loads it as ``ops.Custom(func_type="aot")`` operators. When it cannot (no compiler,
a non-x86 CPU without AVX2/FMA, a failed build) it returns None and logs why, and the model
uses MindSpore's own kernels: slower, same results.

Set ``AUDIO_LABELLING_CPU_KERNELS=0`` to turn the custom kernels off.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading

from transforms.io.machine_cache import cache_subdir

_LOG = logging.getLogger(__name__)
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "ast_cpu_kernels.cc")
LIBRARY_NAME = "ast_cpu_kernels.so"
DISABLE_ENV = "AUDIO_LABELLING_CPU_KERNELS"
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math",
         "-std=c++17", "-shared", "-fPIC", "-pthread"]
_lock = threading.Lock()
_result: dict = {}


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where unreadable)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _unavailable_reason() -> str | None:
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{DISABLE_ENV}={os.environ[DISABLE_ENV]}"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"CPU architecture {platform.machine()} (the kernels are built for x86-64 AVX2)"
    flags = cpu_flags()
    if not {"avx2", "fma"} <= flags:
        return "this CPU lacks AVX2/FMA"
    if not (os.environ.get("CXX") and shutil.which(os.environ["CXX"])) and not shutil.which("g++"):
        return "no C++ compiler (g++ or $CXX) on PATH"
    return None


def _build(target_dir: str) -> str:
    library = os.path.join(target_dir, LIBRARY_NAME)
    if os.path.isfile(library):
        return library
    compiler = os.environ.get("CXX") if os.environ.get("CXX") and shutil.which(os.environ["CXX"]) else "g++"
    # One builder per machine: other worker processes wait on the lock, then find the library.
    with open(os.path.join(target_dir, ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(library):
            return library
        partial = f"{library}.{os.getpid()}.tmp"
        proc = subprocess.run([compiler, *FLAGS, "-o", partial, SOURCE], capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        os.replace(partial, library)   # atomic: readers see the whole library or none
    _LOG.info("built CPU kernels %s", library)
    return library


def kernel_library() -> str | None:
    """Path of the compiled kernel library, built on first use; None (reason logged) if unavailable."""
    with _lock:
        if "path" in _result:
            return _result["path"]
        path = None
        reason = _unavailable_reason()
        if reason is None:
            try:
                with open(SOURCE, "rb") as f:
                    digest = hashlib.sha256(f.read() + " ".join(FLAGS).encode()).hexdigest()[:16]
                path = _build(cache_subdir(os.path.join("kernels", digest)))
            except Exception as exc:  # a broken toolchain must not stop inference
                reason = f"build failed: {exc}"
        if path is None:
            _LOG.warning("custom AVX2 CPU kernels unavailable (%s); using MindSpore's own CPU kernels", reason)
        _result["path"] = path
        _result["reason"] = reason
        return path


def unavailable_reason() -> str | None:
    kernel_library()
    return _result.get("reason")
