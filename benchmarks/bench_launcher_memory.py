"""Launcher peak memory for the summary of a run: must not grow with the number of clips.

    python benchmarks/bench_launcher_memory.py [--small 200] [--large 20000] [--limit_mb 50]

Writes a tiny untrained AST (32 frames x 32 mel bins, 527 labels, so the score vectors are
AudioSet-sized) and, for each size, that many 0.2-s clips in tar shards of 1000 members, then
runs the whole pipeline for real (pipeline.main.main on the DirectRunner, --emit_scores
--emit_embeddings float32) in its own process. Then, in a fresh process per measurement, it
times and measures the launcher's post-pipeline phase exactly as run() does it
(pipeline.main._run_attempt after the job: the run's statistics file plus the tables' Parquet footers, the
accounting checks, the rendered summary) and, for contrast, the old way (reading the clips and
errors tables whole, and the segments' clip ids). Peak RSS is each child's ru_maxrss (os.wait4),
so it includes the interpreter, pyarrow and Beam imports that both sizes share; tracemalloc's peak
of the phase itself is printed too. On the DirectRunner the job runs inside the launcher's
process, so the job's own memory is not the launcher's and is not what this measures.

Prints one JSON object; exit status 1 when the large run's launcher peak exceeds the small run's
by more than --limit_mb.
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
ENV = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", PYTHONPATH=ROOT)

_PHASE = r"""
import json, sys, time, tracemalloc
from transforms.model.runtime_env import ensure_protobuf_python_backend
ensure_protobuf_python_backend()
import pipeline.main as main
from pipeline.runs.publish import read_manifest
from pipeline.runs.layout import Attempt
from pipeline.runs.summary import RunSummary, read_table
out, run_id, mode = sys.argv[1:4]
tracemalloc.start()
t = time.perf_counter()
if mode == "launcher":
    # What main._run_attempt does after the job, on the published run (its files moved out of the attempt).
    summary = RunSummary.read(Attempt(out, run_id, read_manifest(out, run_id)["attempt"]))
    summary.published = True
    summary.check_accounting()
    summary.check_not_empty()
    text = summary.render()
    figures = {"labelled": summary.labelled, "segments": summary.segment_rows}
else:   # the old launcher: every table read back
    clips, errors = read_table(out, run_id, "clips"), read_table(out, run_id, "errors")
    segments = read_table(out, run_id, "segments", columns=["clip_id"])
    figures = {"labelled": clips.num_rows, "segments": segments.num_rows}
seconds = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({**figures, "seconds": round(seconds, 2), "tracemalloc_peak_mb": round(peak / 2**20, 1)}))
"""


def _peak_child(args: list[str]) -> tuple[dict, float]:
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"child failed ({status}):\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1]), round(usage.ru_maxrss / 1024, 1)


def write_corpus(folder: str, clips: int, per_shard: int = 1000) -> None:
    import numpy as np

    from tests.shard_corpus import audio_bytes, make_tar

    rng = np.random.default_rng(0)
    os.makedirs(folder)
    t = np.arange(3200) / 16000
    for shard, first in enumerate(range(0, clips, per_shard)):
        members = []
        for i in range(first, min(first + per_shard, clips)):
            x = 0.3 * np.sin(2 * np.pi * (100 + (i * 37) % 4000) * t) + 0.05 * rng.standard_normal(t.size)
            members.append((f"{i:06d}.wav", audio_bytes("wav", x.astype(np.float32), 16000)))
        with open(os.path.join(folder, f"shard-{shard:05d}.tar"), "wb") as f:
            f.write(make_tar(members))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=20000)
    parser.add_argument("--limit_mb", type=float, default=50.0)
    parser.add_argument("--workdir", default=None, help="keep files here (default: a temp dir, removed)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint

    work = args.workdir or tempfile.mkdtemp(prefix="bench_launcher_")
    report = {"sizes": {}}
    try:
        model = write_checkpoint(os.path.join(work, "model"), TinyASTSpec(
            hidden_size=64, intermediate_size=128, max_length=32, num_mel_bins=32, num_labels=527), seed=0)
        for n in (args.small, args.large):
            audio, out = os.path.join(work, f"audio_{n}"), os.path.join(work, f"labels_{n}")
            write_corpus(audio, n)
            started = time.perf_counter()
            job = subprocess.run(
                [sys.executable, "-c", "import sys; from pipeline.main import main; sys.exit(main(sys.argv[1:]))",
                 "--input", audio, "--model", model, "--output", out, "--run_id", "run",
                 "--emit_scores", "--emit_embeddings", "float32", "--batch_size", "64",
                 "--progress_seconds", "600"], cwd=ROOT, env=ENV, capture_output=True, text=True)
            if job.returncode:
                raise RuntimeError(f"pipeline run of {n} clips failed:\n{job.stderr[-3000:]}")
            pipeline_seconds = time.perf_counter() - started
            launcher, launcher_rss = _peak_child(["-c", _PHASE, out, "run", "launcher"])
            old, old_rss = _peak_child(["-c", _PHASE, out, "run", "old"])
            table_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs) / 2**20
            report["sizes"][n] = {
                "pipeline_seconds": round(pipeline_seconds, 1), "tables_on_disk_mb": round(table_mb, 1),
                "launcher_summary": {**launcher, "peak_rss_mb": launcher_rss},
                "old_read_back": {**old, "peak_rss_mb": old_rss}}
            shutil.rmtree(audio)
        small, large = (report["sizes"][n] for n in (args.small, args.large))
        report["launcher_peak_rss_growth_mb"] = round(
            large["launcher_summary"]["peak_rss_mb"] - small["launcher_summary"]["peak_rss_mb"], 1)
        report["old_read_back_peak_rss_growth_mb"] = round(
            large["old_read_back"]["peak_rss_mb"] - small["old_read_back"]["peak_rss_mb"], 1)
        report["limit_mb"] = args.limit_mb
        report["within_limit"] = report["launcher_peak_rss_growth_mb"] <= args.limit_mb
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return 0 if report["within_limit"] else 1


if __name__ == "__main__":
    sys.exit(main())
