"""Pipeline efficiency: end-to-end DirectRunner clips/s divided by bare-model clips/s.

    python benchmarks/bench_pipeline.py [--clips 192] [--batch-size 4] [--size full|tiny]

Both figures come from the same machine in the same invocation, each part in its own fresh
subprocess (so each loads and compiles its own model, and peak RSS is per part). The bare
model sees precomputed features (no decode, no fbank, no Beam); the pipeline run does
everything: discovery, decode, resample, fbank, RunInference, Parquet, read-back and manifest.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"


def prepare(workdir: str, clips: int, size: str) -> tuple[str, str]:
    from pipeline.demo_audio import chirp, noise, tone, write_audio
    from pipeline.demo_checkpoint import FULL_SIZE, TinyASTSpec, write_checkpoint

    audio = os.path.join(workdir, "audio")
    os.makedirs(audio, exist_ok=True)
    makers = [lambda: tone(10.0, 16000, 440.0), lambda: noise(10.0, 16000, 1), lambda: chirp(10.0, 16000)]
    for i in range(clips):
        write_audio(os.path.join(audio, f"clip_{i:04d}.wav"), makers[i % 3](), 16000)
    model = write_checkpoint(os.path.join(workdir, "model"), FULL_SIZE if size == "full" else TinyASTSpec())
    return audio, model


def part_bare(audio: str, model: str, batch_size: int) -> dict:
    import numpy as np

    from transforms.audio.audio_decode import decode_audio
    from transforms.io.checkpoint import inspect_checkpoint
    from transforms.audio.fbank import ast_input_features
    from transforms.mindspore_inference import load_runner

    info = inspect_checkpoint(model)
    files = sorted(os.path.join(audio, f) for f in os.listdir(audio))
    features = np.stack([ast_input_features(decode_audio(f).waveform, info.features) for f in files])
    runner = load_runner(model, "native", batch_size)
    runner.predict(features[:batch_size])  # warm, beyond load_runner's own warm-up
    started = time.perf_counter()
    runner.predict(features)
    seconds = time.perf_counter() - started
    return {"clips": len(files), "seconds": seconds, "clips_per_second": len(files) / seconds}


def part_pipeline(audio: str, model: str, batch_size: int, out: str) -> dict:
    from pipeline.main import run

    started = time.perf_counter()
    summary = run(["--input", audio, "--output", out, "--model", model, "--batch_size", str(batch_size),
                   "--run_id", "bench"])
    seconds = time.perf_counter() - started
    return {"clips": summary.clips.num_rows, "errors": summary.errors.num_rows, "seconds": seconds,
            "clips_per_second": summary.clips.num_rows / seconds}


def run_part(args, part: str, audio: str, model: str, out: str) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--audio", audio, "--model", model,
           "--batch-size", str(args.batch_size), "--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{part} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The run's fixed cost (launch, model load + compile + warm-up: ~15 s for a full-size AST on
    # 2 cores) is amortised over the clips; 192 ten-second clips is ~3 minutes of inference.
    parser.add_argument("--clips", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", choices=["full", "tiny"], default="full")
    parser.add_argument("--part", choices=["bare", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        import logging

        logging.disable(logging.WARNING)
        result = (part_bare(args.audio, args.model, args.batch_size) if args.part == "bare"
                  else part_pipeline(args.audio, args.model, args.batch_size, args.out))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as workdir:
        audio, model = prepare(workdir, args.clips, args.size)
        bare = run_part(args, "bare", audio, model, workdir)
        piped = run_part(args, "pipeline", audio, model, os.path.join(workdir, "out"))
    print(json.dumps({
        "benchmark": "pipeline_efficiency", "model_size": args.size, "batch_size": args.batch_size,
        "clips": args.clips, "cpu_count": os.cpu_count(),
        "bare_model": bare, "pipeline": piped,
        "efficiency": piped["clips_per_second"] / bare["clips_per_second"],
        # What the run spent beyond the bare model's time for the same clips: launch, model load,
        # compile and warm-up, decode/fbank not hidden behind inference, Parquet, read-back.
        "overhead_seconds": piped["seconds"] - piped["clips"] / bare["clips_per_second"],
    }, indent=2))


if __name__ == "__main__":
    main()
