"""A periodic progress line from each worker process, so a long run is visibly alive.

Beam metrics reach the launcher only when a stage (or the run) finishes; a nightly job over
millions of files needs a heartbeat before that. Every DoFn in a worker process reports into
one per-process tally, which logs a line at most every ``interval`` seconds:

    progress [pid 1234]: 1200 files decoded, 4100 windows scored (13.7/s), 1180 clips labelled, 20 errors
"""
from __future__ import annotations

import logging
import os
import threading
import time

_LOG = logging.getLogger("audio_labelling.progress")
DEFAULT_INTERVAL_SECONDS = 30.0
_FIELDS = ("files_decoded", "windows_scored", "clips_labelled", "errors")


class ProgressLog:
    def __init__(self, interval_seconds: float):
        self.interval = interval_seconds
        self.counts = dict.fromkeys(_FIELDS, 0)
        self._started = time.monotonic()
        self._last = self._started
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self.counts[name] += n
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last = now
            line = self.line(now)
        _LOG.info(line)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        c = self.counts
        return (f"progress [pid {os.getpid()}]: {c['files_decoded']} files decoded, "
                f"{c['windows_scored']} windows scored ({c['windows_scored'] / elapsed:.1f}/s), "
                f"{c['clips_labelled']} clips labelled, {c['errors']} errors, {elapsed:.0f} s")


_process_log: ProgressLog | None = None
_process_lock = threading.Lock()


def process_progress(interval_seconds: float | None = None) -> ProgressLog:
    """The tally of this worker process, shared by its threads and DoFns; counts persist
    across bundles. Passing an interval (re)sets how often it logs."""
    global _process_log
    with _process_lock:
        if _process_log is None:
            _process_log = ProgressLog(DEFAULT_INTERVAL_SECONDS if interval_seconds is None else interval_seconds)
        elif interval_seconds is not None:
            _process_log.interval = interval_seconds
        return _process_log


def reset_process_progress() -> None:
    """Start a fresh tally: in-process runners reuse the launcher's process for every run."""
    global _process_log
    with _process_lock:
        _process_log = None
