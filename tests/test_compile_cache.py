"""Compiled-graph cache of the native AST (transforms/model/compile_cache.py), across processes.

Each load runs in a new process, as a second worker or a second run on the machine would, with
the per-machine cache pointed at a temp dir. Load seconds are printed (see the -s output), not
asserted: timings belong in benchmarks.
"""
import json
import os
import subprocess
import sys

import numpy as np

from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_LOAD = r"""
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
import numpy as np
from transforms.model.ast_native import load_native_ast
t = time.perf_counter()
runner = load_native_ast(sys.argv[1], batch_size=2)
load_s = time.perf_counter() - t
status_at_load = runner.compile_cache.status
x = np.random.default_rng(3).standard_normal((2, 1024, 128)).astype(np.float32)
logits = runner.predict(x)[0]
print(json.dumps({"status_at_load": status_at_load, "status": runner.compile_cache.status,
                  "directory": runner.compile_cache.directory, "load_s": load_s,
                  "first_batch_s": time.perf_counter() - t - load_s, "logits": logits.tolist()}))
"""


def _load_in_new_process(checkpoint: str, cache_dir: str) -> tuple[dict, str]:
    env = dict(os.environ, AUDIO_LABELLING_CACHE_DIR=cache_dir, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    proc = subprocess.run([sys.executable, "-c", _LOAD, checkpoint], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"load {result['load_s']:.2f} s, first batch {result['first_batch_s']:.2f} s, cache {result['status']}")
    return result, proc.stderr


def test_second_process_hits_the_cache_changed_weights_miss_stale_key_rebuilds(tiny_checkpoint, tmp_path):
    cache_dir = str(tmp_path / "machine_cache")
    first, first_log = _load_in_new_process(tiny_checkpoint, cache_dir)
    assert first["status"] == "miss"
    assert "compiled graph cache miss" in first_log
    assert os.path.isfile(os.path.join(first["directory"], "key.json"))
    assert first["directory"].startswith(os.path.join(cache_dir, "compiled"))

    # A second worker / run on this machine: the saved graph is used, the logits are the same.
    second, second_log = _load_in_new_process(tiny_checkpoint, cache_dir)
    assert second["status_at_load"] == "hit" and second["status"] == "hit"
    assert "compiled graph cache hit" in second_log
    assert second["directory"] == first["directory"]
    np.testing.assert_array_equal(np.array(second["logits"]), np.array(first["logits"]))

    # Different weights of the same shapes never share the graph.
    other = write_checkpoint(str(tmp_path / "other_weights"), TinyASTSpec(), seed=1)
    changed, _ = _load_in_new_process(other, cache_dir)
    assert changed["status"] == "miss"
    assert changed["directory"] != first["directory"]
    assert not np.allclose(np.array(changed["logits"]), np.array(first["logits"]))

    # A stored key that no longer matches (here: another MindSpore version wrote it) is rebuilt.
    key_path = os.path.join(first["directory"], "key.json")
    with open(key_path) as f:
        key = json.load(f)
    key["mindspore"] = "0.0.0"
    with open(key_path, "w") as f:
        json.dump(key, f)
    rebuilt, log = _load_in_new_process(tiny_checkpoint, cache_dir)
    assert rebuilt["status"] == "stale"
    assert "key changed: ['mindspore']" in log
    np.testing.assert_allclose(np.array(rebuilt["logits"]), np.array(first["logits"]), atol=1e-6)
    with open(key_path) as f:
        assert json.load(f)["mindspore"] != "0.0.0"
