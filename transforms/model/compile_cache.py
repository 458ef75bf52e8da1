"""MindSpore's compile cache for the native AST, one directory per model key on this machine.

Compiling the full-size graph costs tens of seconds, paid by every worker process of every
run. MindSpore can save a compiled graph (``compile_cache_<n>.mindir``) and load it in a later
process, skipping graph construction and optimisation. The cache lives in the per-machine
cache (``<cache>/compiled/<key digest>/``) where the key holds everything the compiled graph
depends on: the weights' SHA-256 (so different weights never share a graph), config.json,
batch size, device, precision, the kernel library, the model's source code and the MindSpore
version. ``key.json`` in the directory holds the key in full and is compared field by field
before the directory is used; a mismatch, a missing graph file or a cached graph that fails
to load means stale: the directory is wiped and the graph compiled (and saved) afresh.

MindSpore's switch is process-wide, so it is turned on only while this model compiles, under
a lock (other graphs compiled in the process are never written to or read from the model's
directory), and the directory is locked across processes while a graph is written to it, so
concurrent workers on one machine wait for the first to finish and then load its graph.

Set ``AUDIO_LABELLING_COMPILE_CACHE=0`` to turn the cache off.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import threading

from transforms.io.checkpoint import sha256_of_file
from transforms.io.machine_cache import cache_subdir

_LOG = logging.getLogger(__name__)
DISABLE_ENV = "AUDIO_LABELLING_COMPILE_CACHE"
KEY_FILE = "key.json"
_process_lock = threading.RLock()   # MindSpore's compile-cache switch is process-wide
# MindSpore numbers the graphs it saves or loads per process (compile_cache_<n>.mindir, n
# counting the compilations done with the cache on), so a process's second model with the
# cache on looks for graph 1: count ours to know which file a hit needs.
_cached_compiles_in_process = 0
_MODEL_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ast_native.py")
_MODEL_SOURCES = ("ast_native.py", "compile_cache.py", os.path.join("kernels", "ast_cpu_kernels.cc"))


def first_in_process() -> bool:
    """Only a process's first model uses the cache. MindSpore numbers saved graphs per process;
    a worker loads one model, and a graph saved as a process's second or later one
    (compile_cache_1.mindir, ...) crashed a later process that loaded from the same directory
    (a segfault seen in tests/test_model_copies.py after other loads in the test process)."""
    return _cached_compiles_in_process == 0


def enabled() -> bool:
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _sources_sha256() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for name in _MODEL_SOURCES:
        with open(os.path.join(here, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


def model_key(checkpoint_dir: str, *, batch_size: int, device: str, precision: str,
              kernels: str | None, fuse_qkv: bool) -> dict:
    """Everything a compiled graph of this model depends on."""
    import mindspore as ms

    with open(os.path.join(checkpoint_dir, "config.json"), "rb") as f:
        config_sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "weights_sha256": sha256_of_file(os.path.join(checkpoint_dir, "model.safetensors")),
        "config_sha256": config_sha,
        "batch_size": int(batch_size),
        "device": device,
        "precision": precision,
        "kernels": kernels,
        "fuse_qkv": bool(fuse_qkv),
        "model_sources_sha256": _sources_sha256(),
        "mindspore": ms.__version__,
    }


class CompileCache:
    """The cache directory of one model key. ``status``: 'hit', 'miss', 'stale' (rebuilt) or 'off'."""

    def __init__(self, key: dict):
        self.key = key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        self.directory = os.path.join(cache_subdir("compiled"), digest)
        self.status = "off"
        self.reason = ""

    # ------------------------------------------------------------------ state on disk
    def _graphs(self) -> dict[str, float]:
        return {p: os.stat(p).st_mtime_ns
                for p in glob.glob(os.path.join(self.directory, "**", "compile_cache_*.mindir"), recursive=True)}

    def _stored_key(self) -> dict | None:
        try:
            with open(os.path.join(self.directory, KEY_FILE)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def is_valid(self) -> tuple[bool, str]:
        """Whether the directory holds a complete graph saved for exactly this key (and why not)."""
        stored = self._stored_key()
        if stored is None:
            return False, "no cached graph"
        if stored != self.key:
            changed = sorted(k for k in set(stored) | set(self.key) if stored.get(k) != self.key.get(k))
            return False, f"key changed: {changed}"
        wanted = f"compile_cache_{_cached_compiles_in_process}.mindir"
        if not any(os.path.basename(p) == wanted and os.path.getsize(p) > 0 for p in self._graphs()):
            return False, f"graph file {wanted} missing"
        return True, ""

    def wipe(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    # ------------------------------------------------------------------ compiling
    @contextlib.contextmanager
    def compiling(self):
        """Wraps the model's (first) compilation: MindSpore reads/writes this directory meanwhile.

        Sets ``status`` before yielding ('hit' when a valid graph is there), and afterwards
        confirms it: a hit whose graph MindSpore rejected and rewrote is reported as 'stale'."""
        import mindspore as ms

        os.makedirs(self.directory, exist_ok=True)
        with _process_lock, open(os.path.join(self.directory, ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)      # one writer per machine; others then hit
            valid, why = self.is_valid()
            if not valid and self._stored_key() not in (None, self.key):
                self.status, self.reason = "stale", why
                _LOG.info("compiled graph cache stale (%s): rebuilding %s", why, self.directory)
                self.wipe()
                os.makedirs(self.directory, exist_ok=True)
            else:
                self.status, self.reason = ("hit", "") if valid else ("miss", why)
            before = self._graphs()
            # MindSpore checks a cached graph against a hash of the process's entry script and
            # what it imports (sys.argv[0]: a Beam worker, run_pipeline.py, a benchmark, or '-c',
            # which it cannot open). The graph depends on the model's source, which the key
            # holds; point that check at the model's own file so every entry point agrees.
            from mindspore.common import api as ms_api

            saved_entry = getattr(ms_api, "entry_script_path", None)
            ms_api.entry_script_path = _MODEL_FILE
            ms.set_context(enable_compile_cache=True, compile_cache_path=self.directory)
            try:
                yield self
            except Exception:
                if self.status == "hit":
                    self.wipe()   # a cached graph that fails to load is never tried again
                raise
            finally:
                global _cached_compiles_in_process
                _cached_compiles_in_process += 1
                ms.set_context(enable_compile_cache=False)
                ms_api.entry_script_path = saved_entry
            after = self._graphs()
            if self.status == "hit" and after != before:
                self.status, self.reason = "stale", "MindSpore rejected the cached graph and recompiled"
            if self.status != "hit":
                if after:
                    with open(os.path.join(self.directory, KEY_FILE + ".tmp"), "w") as f:
                        json.dump(self.key, f, indent=1, sort_keys=True)
                    os.replace(os.path.join(self.directory, KEY_FILE + ".tmp"),
                               os.path.join(self.directory, KEY_FILE))
                else:
                    self.reason += "; MindSpore wrote no graph"
        if self.status == "hit":
            _LOG.info("compiled graph cache hit: %s", self.directory)
        else:
            _LOG.info("compiled graph cache %s (%s): saved the graph to %s", self.status, self.reason,
                      self.directory)
