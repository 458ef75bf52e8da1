"""The per-machine cache directory shared by every user of this machine's workers.

Root: ``$AUDIO_LABELLING_CACHE_DIR``, default ``${XDG_CACHE_HOME:-~/.cache}/audio-labelling``;
each user takes its own subfolder (``kernels/`` for the compiled CPU kernels, ``compiled/`` for
MindSpore's compiled graphs, ...).
"""
from __future__ import annotations

import os

CACHE_ENV = "AUDIO_LABELLING_CACHE_DIR"


def cache_root() -> str:
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "audio-labelling")
    return root


def cache_subdir(name: str) -> str:
    """``<root>/<name>``, created if missing."""
    path = os.path.join(cache_root(), name)
    os.makedirs(path, exist_ok=True)
    return path
