"""Throughput of the AST backends on one random full-size checkpoint; prints a JSON report.

    cd /work/main && python benchmarks/bench_model.py            # batch 4, 3 rounds, all cores
    python benchmarks/bench_model.py --batch-size 4 --repeats 5 --threads 2 --out report.json

Backends, all on the same checkpoint (pipeline.demo.checkpoint.FULL_SIZE, random weights,
written to a temp dir) and the same input batch:

  native   transforms/model/ast_native.py: MindSpore Cells compiled with mindspore.jit (graph mode)
  mindnlp  MindNLP 0.5 / transformers ASTForAudioClassification on MindSpore (PyNative)
  pytorch  transformers ASTForAudioClassification on real torch (eager), in a separate worker
           subprocess that never imports mindnlp (mindnlp replaces `torch` process-wide)

Threads: native and mindnlp run in this process with MindSpore's CPU kernel pool set to
--threads (mindspore.device_context.cpu.op_tuning.threads_num); the torch worker calls
torch.set_num_threads(--threads). MindSpore's CPU MatMul was seen using every core whatever
threads_num / OMP_NUM_THREADS say, so when --threads is below the core count both processes
are also pinned to the first --threads cores (os.sched_setaffinity) to keep it fair.

Each backend is loaded and warmed up once, then the timed runs are interleaved (native,
mindnlp, pytorch) x --repeats, one batch of --batch-size clips per run; clips/s =
batch_size / seconds, medians reported. Also reported: max |logit| difference native vs
mindnlp and native vs pytorch on that batch; per run, the CPU cores the backend kept busy
(own_cores) and those other processes used meanwhile (foreign_cores).

Other processes on the machine perturb the timings: check foreign_cores (about 0 on a quiet
machine); interleaving spreads that noise over all backends.
"""
from __future__ import annotations

import os

os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"  # before anything imports protobuf

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine_info import machine_info  # noqa: E402


def _system_busy_seconds() -> float:
    """CPU seconds all processes on the machine have spent busy (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _own_cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> dict:
    """Runs fn once: wall seconds, this process's CPU cores used, other processes' cores used."""
    s0, c0, t0 = _system_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    own = _own_cpu_seconds() - c0
    busy = _system_busy_seconds() - s0
    return {"seconds": dt, "own_cores": own / dt, "foreign_cores": max(0.0, busy - own) / dt}


def _features(batch_size: int, max_length: int, num_mel_bins: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, max_length, num_mel_bins)).astype(np.float32)


# --------------------------------------------------------------------------- torch worker


def _pin_to_cores(threads: int) -> list[int] | None:
    """Restricts this process (and threads it starts later) to `threads` cores, if fewer than all."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    if threads >= len(cores):
        return None
    os.sched_setaffinity(0, cores[:threads])
    return cores[:threads]


def torch_worker(checkpoint_dir: str, batch_size: int, threads: int, seed: int) -> None:
    """Line protocol on stdin/stdout: 'run' -> one timed batch; 'quit'. Replies are JSON lines."""
    _pin_to_cores(threads)
    import torch  # real torch: this process never imports mindnlp

    torch.set_num_threads(threads)
    from transformers import ASTForAudioClassification

    out = sys.stdout
    sys.stdout = sys.stderr  # keep library chatter off the protocol channel
    t0 = time.perf_counter()
    model = ASTForAudioClassification.from_pretrained(checkpoint_dir).eval()
    cfg = model.config
    x = torch.from_numpy(_features(batch_size, cfg.max_length, cfg.num_mel_bins, seed))
    with torch.inference_mode():
        logits = model(x).logits.numpy()  # warm-up
    load_s = time.perf_counter() - t0
    out.write(json.dumps({"ready": True, "load_s": load_s, "torch": torch.__version__,
                          "threads": torch.get_num_threads(),
                          "attn_implementation": getattr(cfg, "_attn_implementation", None),
                          "logits": logits.tolist()}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "run":
            with torch.inference_mode():
                m = timed(lambda: model(x).logits.numpy())
            out.write(json.dumps(m) + "\n")
            out.flush()


class TorchProcess:
    def __init__(self, checkpoint_dir: str, batch_size: int, threads: int, seed: int):
        env = dict(os.environ)
        env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
        env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--torch-worker", checkpoint_dir,
             "--batch-size", str(batch_size), "--threads", str(threads), "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch worker exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self) -> dict:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=60)


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds per backend")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="compute threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-dir", default=None,
                    help="reuse this full-size checkpoint dir (written if missing); default: a temp dir")
    ap.add_argument("--backends", default="native,mindnlp,pytorch",
                    help="comma-separated subset of native,mindnlp,pytorch")
    ap.add_argument("--out", default=None, help="also write the JSON report here")
    ap.add_argument("--torch-worker", metavar="DIR", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.torch_worker:
        torch_worker(args.torch_worker, args.batch_size, args.threads, args.seed)
        return {}

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    from pipeline.demo.checkpoint import FULL_SIZE, write_checkpoint

    tmp = None
    ckpt = args.checkpoint_dir
    if ckpt is None:
        tmp = tempfile.TemporaryDirectory(prefix="ast_bench_")
        ckpt = os.path.join(tmp.name, "full_ast")
    if not os.path.isfile(os.path.join(ckpt, "model.safetensors")):
        write_checkpoint(ckpt, FULL_SIZE, seed=args.seed)
    x = _features(args.batch_size, FULL_SIZE.max_length, FULL_SIZE.num_mel_bins, args.seed)

    # MindSpore: CPU device and kernel thread pool before any kernel runs (also used by mindnlp).
    pinned = _pin_to_cores(args.threads)
    import mindspore as ms

    ms.set_device("CPU")
    from transforms.model.ast_native import load_native_ast, set_cpu_threads

    set_cpu_threads(args.threads)

    report: dict = {
        "command": " ".join([os.path.relpath(__file__, REPO_ROOT)] + (argv if argv is not None else sys.argv[1:])),
        "model": "AST full size (12 layers, hidden 768, 527 labels, 1024x128 input), random weights",
        "batch_size": args.batch_size, "repeats": args.repeats, "threads": args.threads,
        "pinned_cores": pinned,
        "machine": machine_info(),
        "load_s": {}, "seconds": {}, "clips_per_s": {}, "median_clips_per_s": {},
    }
    runners = {}
    logits = {}

    # Torch first, in its own process, so its load overlaps nothing that is being timed.
    torch_proc = None
    if "pytorch" in backends:
        torch_proc = TorchProcess(ckpt, args.batch_size, args.threads, args.seed)
        report["load_s"]["pytorch"] = torch_proc.info["load_s"]
        report["pytorch_threads"] = torch_proc.info["threads"]
        report["pytorch_attn_implementation"] = torch_proc.info["attn_implementation"]
        logits["pytorch"] = np.asarray(torch_proc.info["logits"], np.float32)
        runners["pytorch"] = torch_proc.run

    if "native" in backends:
        t = time.perf_counter()
        native = load_native_ast(ckpt, batch_size=args.batch_size)   # includes compile + warm-up
        report["load_s"]["native"] = time.perf_counter() - t
        logits["native"] = native.predict(x)[0]
        runners["native"] = lambda: native.predict(x)

    if "mindnlp" in backends:
        import mindnlp  # (after this, `torch` is MindNLP's MindSpore shim)
        import torch as mtorch
        from transformers import ASTForAudioClassification

        try:
            from importlib.metadata import version
            report["machine"]["libraries"]["mindnlp"] = version("mindnlp")
        except Exception:
            report["machine"]["libraries"]["mindnlp"] = getattr(mindnlp, "__version__", "?")
        t = time.perf_counter()
        mn_model = ASTForAudioClassification.from_pretrained(ckpt).eval()
        mx = mtorch.tensor(x)
        with mtorch.no_grad():
            logits["mindnlp"] = mn_model(mx).logits.numpy()  # warm-up
        report["load_s"]["mindnlp"] = time.perf_counter() - t

        def run_mindnlp():
            with mtorch.no_grad():
                return mn_model(mx).logits.numpy()
        runners["mindnlp"] = run_mindnlp

    order = [b for b in ("native", "mindnlp", "pytorch") if b in runners]
    runs: dict = {b: [] for b in order}
    try:
        for r in range(args.repeats):
            for b in order:
                # pytorch is timed inside its worker (excludes the pipe round trip)
                m = runners[b]() if b == "pytorch" else timed(runners[b])
                runs[b].append(m)
                print(f"round {r + 1}/{args.repeats} {b:8s} {args.batch_size / m['seconds']:6.3f} clips/s "
                      f"(own cores {m['own_cores']:.2f}, other processes {m['foreign_cores']:.2f})",
                      file=sys.stderr)
    finally:
        if torch_proc is not None:
            torch_proc.close()

    report["own_cores"], report["foreign_cores"], report["median_cpu_seconds_per_batch"] = {}, {}, {}
    for b in order:
        secs = [m["seconds"] for m in runs[b]]
        cps = [args.batch_size / s for s in secs]
        report["seconds"][b] = [round(s, 4) for s in secs]
        report["clips_per_s"][b] = [round(c, 4) for c in cps]
        report["median_clips_per_s"][b] = round(statistics.median(cps), 4)
        report["own_cores"][b] = [round(m["own_cores"], 2) for m in runs[b]]
        report["foreign_cores"][b] = [round(m["foreign_cores"], 2) for m in runs[b]]
        report["median_cpu_seconds_per_batch"][b] = round(
            statistics.median(m["seconds"] * m["own_cores"] for m in runs[b]), 3)
    report["note"] = ("own_cores: CPU cores the backend's process kept busy during each run; foreign_cores: "
                      "cores used by other processes on the machine meanwhile (contention); "
                      "cpu_seconds_per_batch: CPU time the backend spent per batch (less sensitive to "
                      "other tenants than wall time, but blind to idle cores).")
    report["machine_after"] = {"load_average_1_5_15": machine_info()["load_average_1_5_15"]}
    med = report["median_clips_per_s"]
    if "native" in med and "pytorch" in med:
        report["ratio_native_over_pytorch"] = round(med["native"] / med["pytorch"], 3)
    if "native" in med and "mindnlp" in med:
        report["ratio_native_over_mindnlp"] = round(med["native"] / med["mindnlp"], 3)
    if "native" in logits:
        for other in ("mindnlp", "pytorch"):
            if other in logits:
                report[f"max_abs_logit_diff_native_vs_{other}"] = float(
                    np.abs(logits["native"] - logits[other]).max())
    cpu = report["median_cpu_seconds_per_batch"]
    if "native" in cpu and "pytorch" in cpu and cpu["native"] > 0:
        report["ratio_cpu_seconds_pytorch_over_native"] = round(cpu["pytorch"] / cpu["native"], 3)
    if "native" in runners:
        report["native_compile_count"] = native.compile_count
        report["native_cpu_kernels"] = native.cpu_kernels is not None
        report["native_compile_cache"] = native.compile_cache.status if native.compile_cache else "off"

    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if tmp is not None:
        tmp.cleanup()
    return report


if __name__ == "__main__":
    main()
