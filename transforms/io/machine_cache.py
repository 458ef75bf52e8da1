"""The per-machine cache directory shared by every user of this machine's workers.

Root: ``$AUDIO_LABELLING_CACHE_DIR``, default ``${XDG_CACHE_HOME:-~/.cache}/audio-labelling``;
each user takes its own subfolder (``checkpoints/`` for verified checkpoint downloads,
``kernels/`` for the compiled CPU kernels, ``compiled/`` for MindSpore's compiled graphs).
"""
from __future__ import annotations

import os

CACHE_ENV = "AUDIO_LABELLING_CACHE_DIR"


def cache_root() -> str:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "audio-labelling")


def cache_subdir(name: str) -> str:
    """``<root>/<name>``, created if missing."""
    path = os.path.join(cache_root(), name)
    os.makedirs(path, exist_ok=True)
    return path
