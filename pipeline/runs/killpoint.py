"""A test hook: the launcher kills (or stops) itself at a named step of its publication.

Inert unless ``AUDIO_LABELLING_KILL_AT`` is set. Its value names one step of KILL_POINTS; when the
launcher reaches it, it sends itself SIGKILL (a real kill: no ``finally``, no cleanup), or with
``<step>:stop`` SIGSTOP (a launcher that stalls, e.g. to let its lease expire). The tests use it to
kill real launcher processes at exact points (tests/test_run_recovery.py); nothing else does.
"""
from __future__ import annotations

import os
import signal

KILL_AT_ENV = "AUDIO_LABELLING_KILL_AT"
KILL_POINTS = (
    "before-promote",           # the lease was checked; no file moved yet
    "after-first-move",         # one table file moved into a table folder
    "between-iceberg-commits",  # the clips table committed, segments and errors not
    "before-manifest",          # every file moved (and committed), the manifest not yet swapped
    "during-retirement",        # published; one file of an earlier attempt removed
)


def reached(step: str) -> None:
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    point, _, how = wanted.partition(":")
    if point == step:
        os.kill(os.getpid(), signal.SIGSTOP if how == "stop" else signal.SIGKILL)
