"""Each worker process's running counts, for the launcher's job-wide progress line.

Beam's in-process runners (the DirectRunner's FnApiRunner, in_memory and multi_processing alike)
report metrics only when the job has finished, and a portable job service (the DirectRunner's,
Flink's) answers with the metrics of a finished job only; a nightly job over millions of files
needs its progress before that. So every DoFn in a worker process adds to one per-process tally,
and the tally is written, at most every few seconds, as one small JSON file per process into the
attempt's ``_progress/`` folder (pipeline/runs/layout.py), on the storage the job writes its
tables to. The launcher sums the files (pipeline/console/live_progress.py): a total over every
worker, whatever the runner. These counts are for the progress line only: the run's accounting
is data the pipeline writes (transforms/run_stats.py). A file that cannot be written costs
the progress line, never the job.

Each process also logs a line of its own every ``interval`` seconds: at DEBUG when it reports to
a launcher, at INFO without a folder to report to (a DoFn used outside the launcher):

    progress [pid 1234]: 1200 files decoded, 4100 windows scored (13.7/s), 1180 clips labelled, 20 errors
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

_LOG = logging.getLogger("audio_labelling.progress")
DEFAULT_INTERVAL_SECONDS = 30.0
# How often a worker writes its counts for the launcher, at most (and at least as often as
# --progress_seconds asks): a terminal's line is redrawn every second.
REPORT_SECONDS = 5.0
FIELDS = (
    "sources_found",      # files and shards discovery found (DiscoverSources)
    "discovery_done",     # 1 once discovery has finished (its process)
    "discovered",         # inputs: plain files, shard members, inputs that failed discovery
    "files_decoded",      # clips decoded through to their last window
    "audio_seconds",      # seconds of audio those clips held
    "windows_scored",
    "clips_labelled",
    "errors",             # inputs that failed (discovery, reading, decoding, scoring)
    "skipped",            # clips --skip_labelled left out
    "sources_done",       # files and shards finished (decoded, failed, skipped or read through)
)


@dataclass(frozen=True)
class ProgressSettings:
    """How a DoFn reports: ``folder`` (a URL; the attempt's ``_progress``) with the run's fsspec
    options (public part; credentials come from the environment), every ``interval_seconds``."""
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    folder: str | None = None
    storage_options: dict = field(default_factory=dict)

    def tally(self) -> "ProgressLog":
        return process_progress(self)


class ProgressLog:
    def __init__(self, settings: ProgressSettings | None = None):
        self.settings = settings or ProgressSettings()
        self.counts = dict.fromkeys(FIELDS, 0)
        self._started = time.monotonic()
        self._last_line = self._last_report = self._started
        self._reported: dict | None = None
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._fs = self._path = None
        self._report_failed = False

    @property
    def interval(self) -> float:
        return self.settings.interval_seconds

    def add(self, **counts) -> None:
        report = line = None
        with self._lock:
            for name, n in counts.items():
                self.counts[name] += n
            now = time.monotonic()
            if now - self._last_line >= self.interval:
                self._last_line, line = now, self.line(now)
            if self.settings.folder is not None and now - self._last_report >= min(self.interval, REPORT_SECONDS):
                self._last_report, report = now, dict(self.counts)
        if line:
            # Reporting to a launcher, which shows the job-wide line: this process's own line is
            # for debugging (worker logs on a cluster), else it is the only progress there is.
            _LOG.log(logging.INFO if self.settings.folder is None else logging.DEBUG, line)
        if report:
            self._write(report)

    def flush(self) -> None:
        """Write the counts now if they changed since the last report (a bundle's end)."""
        if self.settings.folder is None:
            return
        with self._lock:
            report = dict(self.counts)
            self._last_report = time.monotonic()
        self._write(report)

    def _write(self, counts: dict) -> None:
        with self._report_lock:
            if self._report_failed or counts == self._reported:
                return
            try:
                if self._fs is None:
                    self._fs, self._path = _report_target(self.settings)
                self._fs.pipe_file(self._path, json.dumps(
                    {"host": socket.gethostname(), "pid": os.getpid(), "counts": counts}).encode())
                self._reported = counts
            except Exception as e:   # progress is a courtesy: never fail the job over it
                self._report_failed = True
                _LOG.warning("cannot write progress counts to %s (%s: %s); this worker's progress "
                             "is left out of the launcher's line", self.settings.folder,
                             type(e).__name__, e)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self._started, 1e-9)
        c = self.counts
        return (f"progress [pid {os.getpid()}]: {c['files_decoded']} files decoded, "
                f"{c['windows_scored']} windows scored ({c['windows_scored'] / elapsed:.1f}/s), "
                f"{c['clips_labelled']} clips labelled, {c['errors']} errors, {elapsed:.0f} s")


def report_name() -> str:
    """This process's file in the progress folder (host and pid: unique among the workers)."""
    return f"{socket.gethostname()}-{os.getpid()}.json"


def _report_target(settings: ProgressSettings):
    from transforms.io.storage import Storage, resolve_storage_options

    fs, folder = Storage(resolve_storage_options(settings.storage_options)).fs_and_path(settings.folder)
    folder = folder.rstrip("/")
    fs.makedirs(folder, exist_ok=True)
    return fs, f"{folder}/{report_name()}"


_process_log: ProgressLog | None = None
_process_lock = threading.Lock()


def process_progress(settings: ProgressSettings | None = None) -> ProgressLog:
    """The tally of this worker process, shared by its threads and DoFns; counts persist across
    bundles. Settings naming another folder (another run in a reused worker) start a fresh tally;
    settings for the same folder (re)set how often it reports."""
    global _process_log
    with _process_lock:
        if _process_log is None or (settings is not None and settings.folder != _process_log.settings.folder):
            _process_log = ProgressLog(settings)
        elif settings is not None:
            _process_log.settings = settings
        return _process_log


def reset_process_progress() -> None:
    """Start a fresh tally: in-process runners reuse the launcher's process for every run."""
    global _process_log
    with _process_lock:
        _process_log = None
