"""Accelerator readiness in one command: what MindSpore sees, precision parity, clips/s, the pipeline.

    python benchmarks/device_check.py                  # full-size AST, batches 8, 32, 64 (< 5 min on a GPU)
    python benchmarks/device_check.py --ci             # tiny model, small batches: the CPU smoke check
    python benchmarks/device_check.py --out report.json

Steps, each in its own subprocess (MindSpore picks its device once per process; MindNLP and
real torch must not meet), on one random checkpoint in HF layout written to a temp dir:

1. ``devices``: MindSpore's version and, for CPU, GPU and Ascend, whether it can use the
   device, how many there are and their names; plus the CPU fp32 logits of the native backend
   on fixed random features (the reference).
2. ``native``: on the accelerator (Ascend first, then GPU), the native backend in fp32, fp16
   and bf16 against the CPU fp32 logits (max |difference|; fp32 must be within 1e-3), then
   clips/s at each --batches size. Without an accelerator: clips/s on the CPU in fp32, and the
   precision checks are reported as skipped.
3. ``pytorch``: transformers' ASTForAudioClassification in PyTorch eager on the same device
   (CUDA for a GPU, the CPU without an accelerator) at the same batch sizes, when torch is
   installed; otherwise reported as skipped with the reason.
4. ``pipeline``: the whole pipeline (DirectRunner) with --device auto and --model_copies 2 on
   generated ten-second clips: clips/s, errors, the device --device auto chose.

Prints one JSON report (also to --out); exits 1 if any step failed or fp32 parity missed 1e-3.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"  # before anything imports protobuf
HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
for path in (REPO_ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

FP32_TOLERANCE = 1e-3
PRECISIONS = ("fp32", "fp16", "bf16")
_TARGETS = (("ascend", "Ascend"), ("gpu", "GPU"))


def _features(n: int, max_length: int, num_mel_bins: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, max_length, num_mel_bins)).astype(np.float32)


def _spec(size: str):
    from pipeline.demo.checkpoint import FULL_SIZE, TinyASTSpec

    return FULL_SIZE if size == "full" else TinyASTSpec()


def _throughput(predict, features, batch_size: int, repeats: int) -> dict:
    """Median clips/s of `repeats` timed batches (the model is already compiled and warm)."""
    import statistics

    batch = features[:batch_size]
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        predict(batch)
        seconds.append(time.perf_counter() - t)
    return {"batch_size": batch_size, "seconds": [round(s, 4) for s in seconds],
            "clips_per_s": round(batch_size / statistics.median(seconds), 3)}


# --------------------------------------------------------------------------- parts (subprocesses)


def part_devices(args) -> dict:
    import numpy as np
    import mindspore as ms

    seen = {"mindspore": ms.__version__, "targets": {}}
    for name, target in (("cpu", "CPU"),) + _TARGETS:
        entry: dict = {}
        try:
            entry["available"] = bool(ms.hal.is_available(target))
        except Exception as exc:  # a backend whose runtime libraries are missing reports by raising
            entry["available"], entry["error"] = False, f"{type(exc).__name__}: {exc}"[:300]
        if entry["available"] and target != "CPU":
            try:
                count = int(ms.hal.device_count(target))
                entry["count"] = count
                entry["names"] = [ms.hal.get_device_name(i, target) for i in range(count)]
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        seen["targets"][name] = entry
    accelerator = next((name for name, _ in _TARGETS if seen["targets"][name].get("available")), None)
    seen["accelerator"] = accelerator

    from transforms.model.ast_native import load_native_ast

    spec = _spec(args.size)
    x = _features(args.parity_clips, spec.max_length, spec.num_mel_bins)
    runner = load_native_ast(args.model, batch_size=args.parity_clips, device="cpu")
    np.save(os.path.join(args.workdir, "cpu_fp32_logits.npy"), runner.predict(x)[0])
    seen["cpu_reference"] = {"clips": args.parity_clips, "cpu_kernels": runner.cpu_kernels is not None}
    return seen


def part_native(args) -> dict:
    import numpy as np

    from transforms.model.ast_native import load_native_ast

    spec = _spec(args.size)
    device = args.device
    reference = np.load(os.path.join(args.workdir, "cpu_fp32_logits.npy"))
    x_parity = _features(args.parity_clips, spec.max_length, spec.num_mel_bins)
    out: dict = {"device": device, "parity": {}, "throughput": {}}
    precisions = PRECISIONS if device != "cpu" else ("fp32",)
    if device == "cpu":
        out["parity"] = {"skipped": "no accelerator: fp16/bf16 run on GPU/Ascend only"}
    else:
        for precision in precisions:
            try:
                t = time.perf_counter()
                runner = load_native_ast(args.model, batch_size=args.parity_clips, device=device,
                                         precision=precision)
                logits = runner.predict(x_parity)[0]
                diff = float(np.abs(logits - reference).max())
                out["parity"][precision] = {"max_abs_diff_vs_cpu_fp32": diff,
                                            "load_s": round(time.perf_counter() - t, 2)}
                if precision == "fp32":
                    out["parity"][precision]["within_1e-3"] = diff <= FP32_TOLERANCE
            except Exception as exc:
                out["parity"][precision] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    x = _features(max(args.batches), spec.max_length, spec.num_mel_bins, seed=1)
    for precision in args.throughput_precisions.split(","):
        if precision not in precisions:
            continue
        rows = []
        for batch_size in args.batches:
            try:
                t = time.perf_counter()
                runner = load_native_ast(args.model, batch_size=batch_size, device=device, precision=precision)
                runner.predict(x[:batch_size])   # compile (or load the cached graph) and warm up
                row = _throughput(runner.predict, x, batch_size, args.repeats)
                row["load_and_warm_s"] = round(time.perf_counter() - t, 2)
            except Exception as exc:
                row = {"batch_size": batch_size, "error": f"{type(exc).__name__}: {exc}"[:500]}
            rows.append(row)
            del runner
        out["throughput"][precision] = rows
    return out


def part_pytorch(args) -> dict:
    try:
        import torch
        from transformers import ASTForAudioClassification
    except ImportError as exc:
        return {"skipped": f"PyTorch/transformers not installed: {exc}"}
    if args.device == "gpu":
        if not torch.cuda.is_available():
            return {"skipped": f"torch {torch.__version__} sees no CUDA device"}
        dev = torch.device("cuda")
        name = torch.cuda.get_device_name(0)
    elif args.device == "ascend":
        return {"skipped": "PyTorch on Ascend needs torch_npu; not measured"}
    else:
        dev, name = torch.device("cpu"), "cpu"
    spec = _spec(args.size)
    model = ASTForAudioClassification.from_pretrained(args.model).eval().to(dev)
    x = torch.from_numpy(_features(max(args.batches), spec.max_length, spec.num_mel_bins, seed=1)).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def predict(batch):
        with torch.inference_mode():
            model(batch).logits
        sync()

    rows = []
    for batch_size in args.batches:
        predict(x[:batch_size])   # warm-up
        rows.append(_throughput(predict, x, batch_size, args.repeats))
    return {"device": name, "torch": torch.__version__, "fp32": rows}


def part_pipeline(args) -> dict:
    import logging

    from pipeline.demo.audio import chirp, noise, tone, write_audio
    from pipeline.main import run

    audio = os.path.join(args.workdir, "audio")
    os.makedirs(audio, exist_ok=True)
    makers = [lambda: tone(10.0, 16000, 440.0), lambda: noise(10.0, 16000, 1), lambda: chirp(10.0, 16000)]
    for i in range(args.clips):
        write_audio(os.path.join(audio, f"clip_{i:04d}.wav"), makers[i % 3](), 16000)

    chosen = []

    class _AutoDevice(logging.Handler):   # --device auto logs its choice on the worker
        def emit(self, record):
            if "--device auto" in record.getMessage():
                chosen.append(record.getMessage())

    logging.getLogger("transforms.mindspore_inference").addHandler(_AutoDevice())
    logging.getLogger("transforms.mindspore_inference").setLevel(logging.INFO)
    t = time.perf_counter()
    summary = run(["--input", audio, "--output", os.path.join(args.workdir, "out"), "--model", args.model,
                   "--device", "auto", "--model_copies", "2", "--batch_size", str(min(args.batches)),
                   "--run_id", "device-check"])
    seconds = time.perf_counter() - t
    return {"clips": summary.clips.num_rows, "errors": summary.errors.num_rows, "seconds": round(seconds, 2),
            "clips_per_s": round(summary.clips.num_rows / seconds, 3),
            "device_auto_log": chosen[:2] or ["(no accelerator: --device auto fell back to cpu)"]}


PARTS = {"devices": part_devices, "native": part_native, "pytorch": part_pytorch, "pipeline": part_pipeline}


def _run_part(args, part: str, device: str = "cpu", timeout: float = 600) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--part", part, "--workdir", args.workdir,
           "--model", args.model, "--size", args.size, "--device", device,
           "--batches", ",".join(map(str, args.batches)), "--repeats", str(args.repeats),
           "--parity-clips", str(args.parity_clips), "--clips", str(args.clips),
           "--throughput-precisions", args.throughput_precisions]
    env = dict(os.environ)
    if part == "pytorch":
        env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exited {proc.returncode}", "stderr_tail": proc.stderr[-1500:]}
    result = json.loads(lines[-1])
    result["step_seconds"] = round(time.perf_counter() - t, 1)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ci", action="store_true",
                    help="CPU smoke mode: tiny model, batches 2,4, 2 repeats, 6 pipeline clips")
    ap.add_argument("--size", choices=["full", "tiny"], default=None)
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 8,32,64)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--clips", type=int, default=None, help="ten-second clips for the pipeline step")
    ap.add_argument("--parity-clips", type=int, default=4)
    ap.add_argument("--throughput-precisions", default="fp32,fp16",
                    help="precisions timed at each batch size on an accelerator (CPU: fp32 only)")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: pytorch,pipeline")
    ap.add_argument("--out", default=None)
    ap.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.size = args.size or ("tiny" if args.ci else "full")
    args.batches = [int(b) for b in (args.batches or ("2,4" if args.ci else "8,32,64")).split(",")]
    args.repeats = args.repeats or (2 if args.ci else 3)
    args.clips = args.clips or (6 if args.ci else 32)

    if args.part:
        import logging

        logging.basicConfig(level=logging.WARNING)
        sys.stdout.flush()
        real_stdout = sys.stdout
        sys.stdout = sys.stderr   # library chatter stays off the JSON line
        result = PARTS[args.part](args)
        sys.stdout = real_stdout
        print(json.dumps(result))
        return 0

    from machine_info import machine_info

    started = time.perf_counter()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    report: dict = {"command": " ".join(["benchmarks/device_check.py"] + (argv if argv is not None else sys.argv[1:])),
                    "model_size": args.size, "batches": args.batches, "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="device_check_") as workdir:
        args.workdir = workdir
        from pipeline.demo.checkpoint import write_checkpoint

        args.model = write_checkpoint(os.path.join(workdir, "model"), _spec(args.size), seed=0)
        report["devices"] = _run_part(args, "devices")
        accelerator = report["devices"].get("accelerator")
        report["accelerator"] = accelerator
        device = accelerator or "cpu"
        report["native"] = (_run_part(args, "native", device) if "error" not in report["devices"]
                            else {"skipped": "devices step failed"})
        report["pytorch"] = _run_part(args, "pytorch", device) if "pytorch" not in skip else {"skipped": "--skip"}
        report["pipeline"] = _run_part(args, "pipeline", device) if "pipeline" not in skip else {"skipped": "--skip"}
    report["seconds"] = round(time.perf_counter() - started, 1)

    problems = [f"{step}: {report[step]['error']}" for step in ("devices", "native", "pytorch", "pipeline")
                if isinstance(report.get(step), dict) and "error" in report[step]]
    fp32 = report.get("native", {}).get("parity", {}).get("fp32")
    if isinstance(fp32, dict) and not fp32.get("within_1e-3", False):
        problems.append(f"fp32 on {device} is not within {FP32_TOLERANCE} of the CPU: {fp32}")
    pipe = report.get("pipeline", {})
    if isinstance(pipe, dict) and pipe.get("errors"):
        problems.append(f"pipeline wrote {pipe['errors']} error rows")
    report["ok"] = not problems
    report["problems"] = problems
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
