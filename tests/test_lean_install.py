"""`pip install .` is what a worker running the native backend needs, and no more: MindNLP and what
it drags in (torch, transformers, diffusers, peft, datasets) and matplotlib are extras.

The base requirements are read as pip sees them (pip builds the project's metadata, offline); their
closure is resolved through the installed distributions' own metadata (tests/dist_closure.py). Then the whole job runs,
native backend, in a Python where importing any of the extras' packages fails.
"""
import json
import os
import subprocess
import sys

from packaging.utils import canonicalize_name

from tests.audio_corpus import write_good

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_IN_BASE = ("torch", "mindnlp", "transformers", "diffusers", "peft", "datasets", "matplotlib")


def project_requirements() -> list[str]:
    """Requires-Dist of this checkout, as `pip install .` would resolve it (metadata only)."""
    report = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"lean-install-{os.getpid()}.json")
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                        "--no-build-isolation", "--quiet", "--report", report, "."],
                       cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
        with open(report) as f:
            (entry,) = json.load(f)["install"]
    finally:
        if os.path.exists(report):
            os.remove(report)
    return entry["metadata"].get("requires_dist", [])


def closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """Every distribution the requirements pull in (tests/dist_closure.py, in a fresh interpreter)."""
    done = subprocess.run([sys.executable, "-m", "tests.dist_closure",
                           json.dumps({"requirements": requirements, "extras": list(extras)})],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout))


def test_base_install_resolves_without_the_mindnlp_and_report_packages():
    requirements = project_requirements()
    base = closure(requirements)
    assert {"mindspore", "apache-beam", "pyarrow", "s3fs"} <= base   # the walk found the real set
    assert sorted(base.intersection(canonicalize_name(n) for n in NOT_IN_BASE)) == []
    # ... and the extras that hold them exist, and the development install (".[test]") has them all.
    assert {"mindnlp", "torch", "transformers"} <= closure(requirements, ("mindnlp",))
    assert "matplotlib" in closure(requirements, ("report",))
    assert set(NOT_IN_BASE) <= closure(requirements, ("test",))


# Installed first thing in the child: any import of these packages fails as if not installed.
_BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
attempts = []

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
"""

_RUN_NATIVE = _BLOCKER + """
import json
from pipeline.main import run
summary = run(["--input", sys.argv[2], "--output", sys.argv[3], "--model", sys.argv[4],
               "--batch_size", "2", "--device", "cpu"])
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print(json.dumps({"clips": summary.clips.num_rows, "errors": summary.errors.num_rows,
                  "loaded": loaded, "attempts": sorted(set(attempts))}))
"""


def _child(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    return subprocess.run([sys.executable, "-c", code, ",".join(NOT_IN_BASE), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


def test_native_backend_runs_the_job_where_the_extras_cannot_be_imported(tmp_path, tiny_checkpoint):
    audio = tmp_path / "audio"
    good = write_good(str(audio))
    done = _child(_RUN_NATIVE, str(audio), str(tmp_path / "out"), tiny_checkpoint)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["clips"], result["errors"]) == (len(good), 0)
    assert result["loaded"] == []
    print("imports refused (optional imports of Beam and others):", result["attempts"])


_RUN_MINDNLP = _BLOCKER + """
from pipeline.main import main
sys.exit(main(["--input", sys.argv[2], "--output", sys.argv[3], "--model", sys.argv[4],
               "--backend", "mindnlp"]))
"""


def test_mindnlp_backend_without_the_extra_is_refused_at_launch(tmp_path, tiny_checkpoint):
    done = _child(_RUN_MINDNLP, str(tmp_path), str(tmp_path / "out"), tiny_checkpoint)
    assert done.returncode == 2, done.stderr[-4000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pip install '.[mindnlp]'" in errors[0], done.stderr[-2000:]
    assert "mindnlp, transformers, torch" in errors[0]
