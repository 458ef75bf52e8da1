"""The launcher's one job-wide progress line while the job runs.

Where the counts come from, in order:

1. The workers' progress files (transforms/progress.py): each worker process writes its running
   counts into the attempt's ``_progress/`` folder every few seconds; the launcher sums them.
   This works on every runner whose workers write the tables (they share the output storage),
   and it is the only live source on Beam's in-process runners: the DirectRunner's FnApiRunner
   (in_memory and multi_processing) returns from ``run()`` only when the job has finished and
   has no metrics before that, and the portable job service (the DirectRunner's, Flink's)
   answers ``GetJobMetrics`` for finished jobs only.
2. The runner's metrics, ``PipelineResult.metrics().query()`` in namespace ``audio_labelling``,
   where the runner returns a result while the job runs and reports metrics during it
   (Dataflow does): discovered, decoded, labelled, errored, skipped, windows, audio decoded.
3. Neither: a plain "running" line with the time elapsed.

A terminal gets one line redrawn in place (rich's Live display, on stderr, logs printed above
it); anything else (a log file, a CI console) gets a log line every ``--progress_seconds`` and
one when the job ends. These counts are for watching only: the run's accounting and summary
come from the pipeline's own tallies (pipeline/runs/summary.py).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import fsspec

from transforms.io.storage import options_for_protocol, protocol_of
from transforms.progress import FIELDS, REPORT_SECONDS

_LOG = logging.getLogger("audio_labelling.progress")
NAMESPACE = "audio_labelling"
# Beam counters of the pipeline (namespace audio_labelling) -> the progress fields they feed.
RUNNER_COUNTERS = {
    "inputs_discovered": "discovered", "clips_decoded": "files_decoded",
    "windows_scored": "windows_scored", "clips_labelled": "clips_labelled",
    "inputs_errored": "errors", "clips_skipped": "skipped", "sources_discovered": "sources_found",
    "audio_ms_decoded": "audio_seconds",
}


@dataclass
class Counts:
    """The job-wide counts at one moment, and where they came from."""
    values: dict
    source: str            # "workers" or "runner metrics"

    def __getitem__(self, name: str):
        return self.values.get(name, 0)


def read_worker_reports(folder: str, storage_options: dict | None = None) -> Counts | None:
    """The sum of the workers' progress files under ``folder``; None when there are none yet."""
    fs, path = fsspec.core.url_to_fs(folder, **options_for_protocol(storage_options or {}, protocol_of(folder)))
    path = path.rstrip("/")
    fs.invalidate_cache(path)   # object stores' listings are cached: the files change meanwhile
    try:
        files = fs.glob(f"{path}/*.json")
    except FileNotFoundError:
        return None
    total = dict.fromkeys(FIELDS, 0)
    read = 0
    for name in files:
        try:
            counts = json.loads(fs.cat_file(name))["counts"]
        except (OSError, ValueError, KeyError):   # being rewritten this very moment: next time
            continue
        read += 1
        for field in FIELDS:
            value = counts.get(field, 0)
            total[field] = max(total[field], value) if field == "discovery_done" else total[field] + value
    return Counts(total, "workers") if read else None


def read_runner_metrics(result) -> Counts | None:
    """The pipeline's counters as the runner reports them now (committed, else attempted);
    None when it reports none (yet)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    except Exception:   # a runner without metrics, or none before the job ends
        return None
    values = dict.fromkeys(FIELDS, 0)
    seen = False
    for counter in found.get("counters", []):
        field = RUNNER_COUNTERS.get(counter.key.metric.name)
        value = counter.committed if counter.committed is not None else counter.attempted
        if field and value:
            values[field] += value / 1000 if field == "audio_seconds" else value
            seen = True
    return Counts(values, "runner metrics") if seen else None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _audio(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h audio" if seconds >= 360 else f"{seconds / 60:.1f} min audio"


class JobProgress:
    """Reads the counts (see the module docstring) and words them as one line."""

    def __init__(self, folder: str, storage_options: dict | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._folder = folder
        self._storage_options = storage_options
        self._clock = clock
        self.started = clock()
        self.result = None        # the PipelineResult, once the runner returned one
        self.counts: Counts | None = None
        self._rate_from: tuple[float, int] | None = None   # (time, sources done) when first seen

    def read(self) -> Counts | None:
        counts = None
        try:
            counts = read_worker_reports(self._folder, self._storage_options)
        except Exception as e:   # the line is a courtesy: a storage hiccup costs one update
            _LOG.debug("progress files unreadable: %s: %s", type(e).__name__, e)
        if counts is None and self.result is not None:
            counts = read_runner_metrics(self.result)
        if counts is not None:
            self.counts = counts
            if self._rate_from is None and counts["sources_done"]:
                self._rate_from = (self._clock(), counts["sources_done"])
        return self.counts

    def clear(self) -> None:
        """Remove the workers' progress files: they mean something only while the job runs.
        Best effort (a leftover file is harmless: nothing but this line reads them)."""
        try:
            fs, path = fsspec.core.url_to_fs(
                self._folder, **options_for_protocol(self._storage_options or {}, protocol_of(self._folder)))
            if fs.exists(path):
                fs.rm(path, recursive=True)
        except Exception as e:
            _LOG.debug("progress files not removed from %s: %s: %s", self._folder, type(e).__name__, e)

    def eta_seconds(self) -> float | None:
        """Once discovery has finished: the sources left at the rate sources finished so far."""
        c = self.counts
        if c is None or not c["discovery_done"] or self._rate_from is None:
            return None
        since, done_then = self._rate_from
        done, elapsed = c["sources_done"], self._clock() - since
        if done <= done_then or elapsed <= 0:
            return None
        return max(c["sources_found"] - done, 0) * elapsed / (done - done_then)

    def line(self, finished: bool = False) -> str:
        elapsed = self._clock() - self.started
        c = self.counts
        if c is None:
            return f"progress: running, {_duration(elapsed)} elapsed (no counts reported yet)"
        # Discovery finds sources; a shard's members are counted as it is read.
        discovered = max(c["discovered"], c["sources_found"])
        parts = [f"{discovered} discovered", f"{c['files_decoded']} decoded",
                 f"{c['clips_labelled']} labelled", f"{c['errors']} errored", f"{c['skipped']} skipped",
                 _audio(c["audio_seconds"]),
                 f"{c['windows_scored'] / max(elapsed, 1e-9):.1f} windows/s"]
        eta = None if finished else self.eta_seconds()
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        elif not finished and not c["discovery_done"]:
            parts.append("discovering")
        state = "finished" if finished else "running"
        return f"progress: {', '.join(parts)} ({state}, {_duration(elapsed)} elapsed)"


class ProgressDisplay:
    """Shows :class:`JobProgress` while the job runs: one redrawn line on a terminal, else a log
    line every ``interval_seconds`` and one at the end. Disabled (``--quiet``): shows nothing."""

    def __init__(self, progress: JobProgress, interval_seconds: float, enabled: bool = True,
                 stream=None):
        self.progress = progress
        self.interval = max(float(interval_seconds), 0.0)
        self.enabled = enabled
        self._stream = stream or sys.stderr
        self.tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._live = None
        self._last_read = self._last_line = float("-inf")

    @property
    def poll_seconds(self) -> float:
        return 1.0 if self.tty else min(max(self.interval, 0.2), 1.0)

    def __enter__(self):
        if self.enabled and self.tty:
            from rich.console import Console
            from rich.live import Live

            from pipeline.console.logs import console_handler

            self._live = Live("", console=Console(file=self._stream), auto_refresh=False,
                              transient=True, redirect_stderr=True, redirect_stdout=False)
            self._live.start()
            # Log lines go above the redrawn line, through rich's stderr proxy.
            self._handler = console_handler()
            self._handler_stream = self._handler.setStream(sys.stderr) if self._handler else None
        return self

    def tick(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_read >= (REPORT_SECONDS if self.tty else min(self.interval, REPORT_SECONDS)):
            self._last_read = now
            self.progress.read()
        if self._live is not None:
            from rich.text import Text

            # One line, cut to the terminal's width: a wrapped line would no longer be one line.
            self._live.update(Text(self.progress.line(), no_wrap=True, overflow="ellipsis"), refresh=True)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            _LOG.info(self.progress.line())

    def __exit__(self, exc_type, exc, tb):
        if self._live is not None:
            self._live.stop()
            if self._handler is not None:
                self._handler.setStream(self._handler_stream)
        if self.enabled and exc_type is None:
            self.progress.read()
            _LOG.info(self.progress.line(finished=True))
        return False


def run_watched(job: Callable, display: ProgressDisplay):
    """Runs ``job(on_started)`` (which returns the finished PipelineResult, calling
    ``on_started(result)`` as soon as the runner returned one) in this thread while a thread of
    the display's own polls, so that the line moves while runners that run the whole job inside
    ``run()`` (the DirectRunner) block. The job keeps the launcher's main thread: runners that
    start a job server (Flink's, Spark's) install signal handlers, which Python allows only
    there, and Ctrl-C reaches the job as Beam expects."""
    if not display.enabled:
        return job(None)

    def started(result):
        display.progress.result = result

    stop = threading.Event()

    def poll():
        while not stop.wait(display.poll_seconds):
            display.tick()

    with display:
        poller = threading.Thread(target=poll, name="progress-display", daemon=True)
        poller.start()
        try:
            return job(started)
        finally:
            stop.set()
            poller.join()
