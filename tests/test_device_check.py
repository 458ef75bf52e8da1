"""benchmarks/device_check.py in its CPU smoke mode: it runs every step and prints its JSON report."""
import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_device_check_ci_mode_on_cpu(tmp_path):
    out = tmp_path / "device_check.json"
    env = dict(os.environ, AUDIO_LABELLING_CACHE_DIR=str(tmp_path / "machine_cache"))
    proc = subprocess.run([sys.executable, "benchmarks/device_check.py", "--ci", "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout[proc.stdout.index("{"):]) == report   # the printed report is the file's
    assert report["ok"] is True and report["problems"] == []
    # What MindSpore sees: a CPU, and here no accelerator.
    assert report["devices"]["targets"]["cpu"]["available"] is True
    assert report["accelerator"] is None
    assert set(report["devices"]["targets"]) == {"cpu", "gpu", "ascend"}
    assert report["machine"]["vector_isa"] in ("AMX", "AVX-512", "AVX2", "AVX", "none/unknown")
    # Native throughput on the CPU at the CI batch sizes; precision checks skipped without a device.
    assert report["native"]["device"] == "cpu"
    assert "skipped" in report["native"]["parity"]
    rows = report["native"]["throughput"]["fp32"]
    assert [r["batch_size"] for r in rows] == [2, 4]
    assert all(r["clips_per_s"] > 0 for r in rows)
    # PyTorch eager on the same device (installed here), same batch sizes.
    assert [r["batch_size"] for r in report["pytorch"]["fp32"]] == [2, 4]
    # The pipeline end to end with --device auto --model_copies 2: every clip labelled.
    assert report["pipeline"]["clips"] == 6 and report["pipeline"]["errors"] == 0
