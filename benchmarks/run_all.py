"""The one benchmark command: model, fbank and pipeline-efficiency figures in one JSON report.

    python benchmarks/run_all.py [--out report.json] [--quick]

Runs, one after another on this machine (each in its own process, so each measures alone):
  benchmarks/bench_model.py     native vs MindNLP vs PyTorch eager clips/s, full-size AST, ratios
  benchmarks/bench_fbank.py     fbank ms per 10-s clip per core, ours vs HF ASTFeatureExtractor
  benchmarks/bench_pipeline.py  end-to-end DirectRunner clips/s / bare-model clips/s, peak RSS
Every ratio compares figures measured in the same run. --quick shortens each (fewer repeats,
fewer clips) for a smoke check; the README figures come from the full run. Takes ~10 minutes
on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from machine_info import machine_info  # noqa: E402


def run_json(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, os.path.join(HERE, script), *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        return {"error": f"{script} exited {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
    text = proc.stdout.strip()
    start = text.find("{")   # the scripts print one JSON object (possibly indented) last
    return json.loads(text[start:]) if start >= 0 else {"error": "no JSON", "stdout_tail": text[-2000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="also write the report here")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    report = {
        # CPU model, vector flags (AVX2 / AVX-512 / AMX), cores, load and library versions: the
        # figures below hold for this kind of host only.
        "machine": machine_info(),
        "model": run_json("bench_model.py", "--batch-size", "4", "--repeats", "1" if quick else "3"),
        "fbank": run_json("bench_fbank.py", "--repeats", "3" if quick else "7"),
        "pipeline": run_json("bench_pipeline.py", "--batch-size", "4", "--clips", "8" if quick else "192",
                             "--size", "tiny" if quick else "full"),
    }
    text = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
