"""Peak memory of labelling a 1-hour file vs a 10-second file: must not grow with file length.

    python benchmarks/bench_long_file_memory.py [--long_seconds 3600] [--batch_size 8] [--format m4a]

Writes the tiny untrained AST checkpoint and two mono 16-bit WAV files (16 kHz by default;
the 1-hour one is then 110 MiB), or with ``--format m4a`` two AAC files in MP4 (encoded with
PyAV; decoded through FFmpeg, transforms/audio/ffmpeg_reader.py), to a temporary directory, then labels each file with the whole pipeline
(pipeline.main.run on DirectRunner, same model, same batch size) in its own fresh Python
process. The peak RSS of each child is its ru_maxrss, read with os.wait4 on that child's pid
(so neither run's peak can hide the other's). DirectRunner's default in_memory mode does all the
work inside that process (its only subprocess is numpy's short-lived `lscpu` probe at import).
Prints one JSON object; exit status 1 when the long run's peak exceeds the short run's by more
than --limit_mb.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 16000


def recording_parts(seconds: float, rate: int = RATE):
    """Alternating 30 s parts (tone, noise, silence, chirp) as float32 arrays, one at a time."""
    import numpy as np

    rng = np.random.default_rng(0)
    part = 30 * rate
    total = int(seconds * rate)
    for i, first in enumerate(range(0, total, part)):
        n = min(part, total - first)
        t = np.arange(n) / rate
        kind = i % 4
        if kind == 0:
            x = 0.5 * np.sin(2 * np.pi * (220 + 110 * (i % 7)) * t)
        elif kind == 1:
            x = 0.3 * rng.standard_normal(n)
        elif kind == 2:
            x = np.zeros(n)
        else:
            x = 0.5 * np.sin(2 * np.pi * (100 * t + 0.5 * (5900 / 30) * t * t))
        yield x.astype(np.float32)


def write_recording(path: str, seconds: float, rate: int = RATE) -> str:
    """The recording as a 16-bit WAV, written a part at a time."""
    import soundfile

    with soundfile.SoundFile(path, "w", samplerate=rate, channels=1, format="WAV", subtype="PCM_16") as f:
        for x in recording_parts(seconds, rate):
            f.write(x)
    return path


def write_recording_m4a(path: str, seconds: float, rate: int = RATE) -> str:
    """The recording as AAC in MP4 (PyAV's FFmpeg encoder), encoded a part at a time."""
    import av
    import numpy as np

    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="mono")
        for x in recording_parts(seconds, rate):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, :]), format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def control(audio: str, model: str) -> None:
    """Runs in the fresh process: the same imports and model load, then the whole file decoded
    at once (transforms.audio.audio_decode.decode_audio, the pre-streaming path). Shows that the
    measurement sees a long file's samples when they are held in memory."""
    sys.path.insert(0, ROOT)
    import pipeline.main  # noqa: F401  (same import footprint as a run)
    from transforms.audio.audio_decode import decode_audio
    from transforms.mindspore_inference import load_runner

    started = time.perf_counter()
    load_runner(model, "native", batch_size=8)
    audio_samples = decode_audio(audio).waveform.shape[0]
    print(json.dumps({"decoded_samples": audio_samples, "wall_seconds": round(time.perf_counter() - started, 1),
                      "final_rss_mb": _rss_mb()}))


def child(audio: str, model: str, out: str, batch_size: int) -> None:
    """Runs in the fresh process: label one file, print what came out."""
    sys.path.insert(0, ROOT)
    from pipeline.main import run

    started = time.perf_counter()
    summary = run(["--input", audio, "--output", out, "--model", model, "--batch_size", str(batch_size),
                   "--run_id", "bench", "--runner", "DirectRunner"])
    print(json.dumps({
        "clips": summary.clips.num_rows,
        "errors": summary.errors.num_rows,
        "windows": summary.segments.num_rows,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "final_rss_mb": _rss_mb(),
    }))


def measure(*child_args: str) -> dict:
    """Runs this script with ``child_args`` in a fresh process; its JSON plus its peak RSS."""
    audio = child_args[1]
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *child_args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    # Read the pipes on threads: wait4 must reap the child itself to get its rusage.
    import threading

    streams = {}
    readers = [threading.Thread(target=lambda k=k, s=s: streams.__setitem__(k, s.read()))
               for k, s in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(streams["err"].decode(errors="replace")[-4000:])
        raise SystemExit(f"child for {audio} failed with status {proc.returncode}")
    report = json.loads(streams["out"].decode().strip().splitlines()[-1])
    report["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)    # Linux: KiB
    report["file_mb"] = round(os.path.getsize(audio) / 2**20, 1)
    return report


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--control":
        control(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long_seconds", type=float, default=3600.0)
    parser.add_argument("--short_seconds", type=float, default=10.0)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--rate", type=int, default=RATE,
                        help="sample rate of both files (16000: no resampling; e.g. 44100 exercises "
                             "the streaming resampler; 1 h at 44.1 kHz is a 318 MB WAV)")
    parser.add_argument("--format", choices=["wav", "m4a"], default="wav",
                        help="wav: libsndfile decodes; m4a: AAC in MP4, FFmpeg (PyAV) decodes")
    parser.add_argument("--limit_mb", type=float, default=300.0)
    parser.add_argument("--workdir", default=None, help="keep the files here instead of a temp dir")
    parser.add_argument("--no_control", action="store_true",
                        help="skip the control run (whole long file decoded in memory)")
    args = parser.parse_args()

    sys.path.insert(0, ROOT)
    from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint

    work = args.workdir or tempfile.mkdtemp(prefix="bench_long_memory_")
    os.makedirs(work, exist_ok=True)
    try:
        model = write_checkpoint(os.path.join(work, "tiny_ast"), TinyASTSpec(), seed=0)
        write = write_recording_m4a if args.format == "m4a" else write_recording
        short = write(os.path.join(work, f"short.{args.format}"), args.short_seconds, args.rate)
        long = write(os.path.join(work, f"long.{args.format}"), args.long_seconds, args.rate)
        batch = str(args.batch_size)
        results = {
            "short": {"seconds": args.short_seconds,
                      **measure("--child", short, model, os.path.join(work, "out_short"), batch)},
            "long": {"seconds": args.long_seconds,
                     **measure("--child", long, model, os.path.join(work, "out_long"), batch)},
        }
        if not args.no_control:
            results["control_whole_long_file_in_memory"] = {
                "seconds": args.long_seconds, **measure("--control", long, model)}
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    delta = round(results["long"]["peak_rss_mb"] - results["short"]["peak_rss_mb"], 1)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine_info import machine_info

    report = {"benchmark": "long_file_memory", "model": "tiny untrained AST (TinyASTSpec)",
              "format": args.format, "machine": machine_info(),
              "batch_size": args.batch_size, "sample_rate": args.rate, "runner": "DirectRunner", **results,
              "peak_rss_delta_mb": delta, "limit_mb": args.limit_mb, "within_limit": delta <= args.limit_mb}
    if "control_whole_long_file_in_memory" in results:
        report["control_delta_mb"] = round(results["control_whole_long_file_in_memory"]["peak_rss_mb"]
                                           - results["short"]["peak_rss_mb"], 1)
    print(json.dumps(report, indent=2))
    return 0 if report["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
