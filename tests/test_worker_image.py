"""The worker image recipe (Dockerfile) stays in step with the project. No docker engine runs in
CI, so the image itself is not built here; these checks catch the drift that would break it."""
import importlib.metadata
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dockerfile() -> str:
    with open(os.path.join(REPO, "Dockerfile")) as f:
        return f.read()


def test_base_image_is_beams_sdk_for_our_python_and_beam():
    (image,) = re.findall(r"^FROM\s+(\S+)", _dockerfile(), flags=re.M)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert image == f"apache/beam_python{python}_sdk:{importlib.metadata.version('apache-beam')}"
    with open(os.path.join(REPO, "setup.py")) as f:
        assert f'"apache-beam=={importlib.metadata.version("apache-beam")}"' in f.read()


def test_worker_environment_and_package_contents():
    text = _dockerfile()
    assert re.search(r"^ENV PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python$", text, flags=re.M)
    copied = " ".join(re.findall(r"^COPY\s+(.+)$", text, flags=re.M))
    # Everything setup.py packages (find_packages include=..., py_modules) reaches the image.
    for needed in ("setup.py", "run_pipeline.py", "pipeline", "transforms", "schemas"):
        assert re.search(rf"(^|\s){re.escape(needed)}(\s|$)", copied), f"{needed} is not copied"
    assert re.search(r'^RUN pip install --no-cache-dir "/opt/audio-labelling\$\{EXTRAS\}"', text, flags=re.M)
