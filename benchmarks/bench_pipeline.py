"""Pipeline efficiency: end-to-end DirectRunner clips/s against the bare model and against PyTorch.

    python benchmarks/bench_pipeline.py [--clips 192] [--batch-size 4] [--size full|tiny]
    python benchmarks/bench_pipeline.py --clips 24          # the issue-13 comparison

All figures come from the same machine in the same invocation, each part in its own fresh
subprocess (so each loads and compiles its own model, and peak RSS is per part):

  bare      the native model on precomputed features (no decode, no fbank, no Beam)
  pytorch   the reference a user would write without this pipeline: load transformers'
            ASTForAudioClassification in PyTorch eager, then decode + fbank + model for every
            clip at the same batch size (load included, no Beam, no output written)
  pipeline  everything: launch, discovery, decode, resample, fbank, RunInference (model load
            and compile, or the compiled-graph cache), Parquet, read-back and manifest

The pipeline's first run on a machine compiles the graph and fills the per-machine cache; a
second run loads it (``--pipeline-runs 2`` times both, reported in order).
Prints one JSON object, with the machine's CPU model, vector flags and load beside the figures.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if "--part" not in sys.argv or "pytorch" not in sys.argv:   # the torch part never loads MindSpore
    os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"


def prepare(workdir: str, clips: int, size: str) -> tuple[str, str]:
    from pipeline.demo.audio import chirp, noise, tone, write_audio
    from pipeline.demo.checkpoint import FULL_SIZE, TinyASTSpec, write_checkpoint

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


def part_pytorch(audio: str, model: str, batch_size: int) -> dict:
    """decode + fbank + PyTorch eager model for every clip, model load included."""
    started = time.perf_counter()
    import numpy as np
    import torch
    from transformers import ASTForAudioClassification

    from transforms.audio.audio_decode import decode_audio
    from transforms.audio.fbank import ast_input_features
    from transforms.io.checkpoint import inspect_checkpoint

    info = inspect_checkpoint(model)
    net = ASTForAudioClassification.from_pretrained(model).eval()
    loaded = time.perf_counter() - started
    files = sorted(os.path.join(audio, f) for f in os.listdir(audio))
    scored = 0
    with torch.inference_mode():
        for i in range(0, len(files), batch_size):
            chunk = files[i:i + batch_size]
            x = np.stack([ast_input_features(decode_audio(f).waveform, info.features) for f in chunk])
            scored += net(torch.from_numpy(x)).logits.shape[0]
    seconds = time.perf_counter() - started
    return {"clips": scored, "seconds": seconds, "load_s": loaded, "clips_per_second": scored / seconds,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def part_pipeline(audio: str, model: str, batch_size: int, out: str) -> dict:
    import logging

    from pipeline.main import run

    cache_events = []

    class _CacheLog(logging.Handler):   # the model's compiled-graph cache: hit, miss or stale
        def emit(self, record):
            cache_events.append(record.getMessage())

    logging.disable(logging.NOTSET)
    cache_log = logging.getLogger("transforms.model.compile_cache")
    cache_log.setLevel(logging.INFO)
    cache_log.propagate = False
    cache_log.addHandler(_CacheLog())
    started = time.perf_counter()
    summary = run(["--input", audio, "--output", out, "--model", model, "--batch_size", str(batch_size),
                   "--run_id", "bench"])
    seconds = time.perf_counter() - started
    return {"clips": summary.clips.num_rows, "errors": summary.errors.num_rows, "seconds": seconds,
            "clips_per_second": summary.clips.num_rows / seconds, "compile_cache_log": cache_events}


def run_part(args, part: str, audio: str, model: str, out: str) -> dict:
    cmd = [sys.executable, __file__, "--part", part, "--audio", audio, "--model", model,
           "--batch-size", str(args.batch_size), "--out", out]
    env = dict(os.environ)
    if part == "pytorch":
        env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    if args.cache_dir:
        env["AUDIO_LABELLING_CACHE_DIR"] = args.cache_dir
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
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
    parser.add_argument("--parts", default="bare,pytorch,pipeline",
                        help="comma-separated subset of bare,pytorch,pipeline")
    parser.add_argument("--pipeline-runs", type=int, default=1,
                        help="pipeline runs one after another (the 2nd+ load the compiled graph from the cache)")
    parser.add_argument("--cache-dir", default=None,
                        help="per-machine cache root for the parts (default: the machine's, "
                             "$AUDIO_LABELLING_CACHE_DIR or ~/.cache/audio-labelling)")
    parser.add_argument("--part", choices=["bare", "pipeline", "pytorch"], help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        import logging

        logging.disable(logging.WARNING)
        if args.part == "bare":
            result = part_bare(args.audio, args.model, args.batch_size)
        elif args.part == "pytorch":
            result = part_pytorch(args.audio, args.model, args.batch_size)
        else:
            result = part_pipeline(args.audio, args.model, args.batch_size, args.out)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    from machine_info import machine_info

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    report = {"benchmark": "pipeline_efficiency", "model_size": args.size, "batch_size": args.batch_size,
              "clips": args.clips, "machine": machine_info()}
    with tempfile.TemporaryDirectory() as workdir:
        audio, model = prepare(workdir, args.clips, args.size)
        bare = run_part(args, "bare", audio, model, workdir) if "bare" in parts else None
        reference = run_part(args, "pytorch", audio, model, workdir) if "pytorch" in parts else None
        runs = []
        if "pipeline" in parts:
            for i in range(max(1, args.pipeline_runs)):
                runs.append(run_part(args, "pipeline", audio, model, os.path.join(workdir, f"out{i}")))
    piped = runs[0] if runs else None
    report.update({"bare_model": bare, "pytorch_decode_and_model": reference, "pipeline": piped})
    if len(runs) > 1:
        report["pipeline_later_runs"] = runs[1:]
    if piped and bare:
        report["efficiency"] = piped["clips_per_second"] / bare["clips_per_second"]
        # What the run spent beyond the bare model's time for the same clips: launch, model load,
        # compile and warm-up, decode/fbank not hidden behind inference, Parquet, read-back.
        report["overhead_seconds"] = piped["seconds"] - piped["clips"] / bare["clips_per_second"]
    if piped and reference:
        report["pipeline_over_pytorch"] = round(piped["clips_per_second"] / reference["clips_per_second"], 3)
        if len(runs) > 1:
            report["later_pipeline_runs_over_pytorch"] = [
                round(r["clips_per_second"] / reference["clips_per_second"], 3) for r in runs[1:]]
    report["load_average_after"] = machine_info()["load_average_1_5_15"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
