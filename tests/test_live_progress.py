"""The launcher's job-wide progress line: summed over the workers' files, from the runner's metrics
where it reports them, an ETA once discovery has finished, one redrawn line on a terminal."""
import json
import logging
import os
import pty
import select
import time

import apache_beam as beam
import pytest

from pipeline.console.live_progress import (
    JobProgress, ProgressDisplay, read_runner_metrics, read_worker_reports, run_watched)
from transforms.progress import FIELDS, ProgressLog, ProgressSettings


def write_report(folder, name, **counts):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        json.dump({"host": "h", "pid": 1, "counts": {**dict.fromkeys(FIELDS, 0), **counts}}, f)


def test_worker_reports_are_summed(tmp_path):
    folder = str(tmp_path / "_progress")
    assert read_worker_reports(folder) is None            # no folder yet: nothing to show
    write_report(folder, "a-1.json", discovered=3, files_decoded=2, audio_seconds=7.5, discovery_done=1,
                 sources_found=5)
    write_report(folder, "b-2.json", discovered=2, files_decoded=1, audio_seconds=2.5, errors=1)
    with open(os.path.join(folder, "c-3.json"), "w") as f:
        f.write('{"counts": {"discov')                     # being written this very moment
    counts = read_worker_reports(folder)
    assert (counts["discovered"], counts["files_decoded"], counts["audio_seconds"], counts["errors"]) == (5, 3, 10.0, 1)
    assert counts["discovery_done"] == 1 and counts["sources_found"] == 5 and counts.source == "workers"


def test_a_worker_tally_writes_its_report(tmp_path):
    folder = str(tmp_path / "_progress")
    log = ProgressLog(ProgressSettings(interval_seconds=0, folder=folder))
    log.add(discovered=2, files_decoded=1, windows_scored=4)
    log.add(clips_labelled=1)
    log.flush()
    counts = read_worker_reports(folder)
    assert (counts["discovered"], counts["windows_scored"], counts["clips_labelled"]) == (2, 4, 1)


def test_eta_once_discovery_has_finished(tmp_path):
    folder = str(tmp_path / "_progress")
    now = [100.0]
    progress = JobProgress(folder, clock=lambda: now[0])
    assert "running" in progress.line() and "no counts reported yet" in progress.line()
    write_report(folder, "w.json", sources_found=10, discovered=10)
    progress.read()
    assert "discovering" in progress.line() and "ETA" not in progress.line()
    write_report(folder, "w.json", sources_found=10, discovered=10, sources_done=2, discovery_done=1)
    now[0] = 110.0
    progress.read()                 # the rate is measured from the first source done: 2 at t=110
    assert progress.eta_seconds() is None and "ETA" not in progress.line()
    write_report(folder, "w.json", sources_found=10, discovered=10, sources_done=4, discovery_done=1,
                 windows_scored=40)
    now[0] = 120.0
    progress.read()
    assert progress.eta_seconds() == 30.0         # 6 left at 2 per 10 s
    line = progress.line()
    assert line.startswith("progress: 10 discovered, 0 decoded") and "ETA 0:30" in line
    assert "2.0 windows/s" in line and "(running, 0:20 elapsed)" in line
    assert "ETA" not in progress.line(finished=True) and "(finished," in progress.line(finished=True)


def test_runner_metrics_feed_the_line_where_the_runner_reports_them():
    def count(n):
        counter = beam.metrics.Metrics.counter
        counter("audio_labelling", "inputs_discovered").inc()
        counter("audio_labelling", "clips_decoded").inc()
        counter("audio_labelling", "audio_ms_decoded").inc(1500)
        counter("audio_labelling", "windows_scored").inc(2)
        return n

    p = beam.Pipeline(runner="DirectRunner")
    _ = p | beam.Create(range(3)) | beam.Map(count)
    result = p.run()
    result.wait_until_finish()
    counts = read_runner_metrics(result)
    assert counts.source == "runner metrics"
    assert (counts["discovered"], counts["files_decoded"], counts["windows_scored"]) == (3, 3, 6)
    assert counts["audio_seconds"] == 4.5

    class Silent:                      # a runner that reports no metrics
        def metrics(self):
            raise NotImplementedError

    assert read_runner_metrics(Silent()) is None


def test_a_terminal_gets_one_redrawn_line(tmp_path):
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        display = ProgressDisplay(JobProgress(str(tmp_path / "_progress")), interval_seconds=30, stream=terminal)
        assert display.tty
        assert run_watched(lambda on_started: time.sleep(2.5) or "done", display) == "done"
    shown = b""
    while select.select([master], [], [], 0.5)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    text = shown.decode(errors="replace")
    assert text.count("progress: running") >= 2, text      # redrawn each second...
    assert "\x1b[" in text and "\n" not in text.replace("\r\n", "\r").split("progress")[1][:80], text


def test_elsewhere_a_log_line_every_interval_and_one_at_the_end(tmp_path, caplog):
    class Pipe:                                            # not a terminal
        def isatty(self):
            return False

    display = ProgressDisplay(JobProgress(str(tmp_path / "_progress")), interval_seconds=1, stream=Pipe())
    with caplog.at_level(logging.INFO, logger="audio_labelling.progress"):
        run_watched(lambda on_started: time.sleep(2.2), display)
    lines = [r.getMessage() for r in caplog.records]
    assert 3 <= len(lines) <= 5, lines
    assert lines[-1].startswith("progress: running") or "(finished," in lines[-1]


def test_quiet_shows_nothing(tmp_path, caplog):
    display = ProgressDisplay(JobProgress(str(tmp_path / "_progress")), interval_seconds=0, enabled=False)
    with caplog.at_level(logging.DEBUG, logger="audio_labelling.progress"):
        assert run_watched(lambda on_started: "result", display) == "result"
    assert caplog.records == []


def test_the_job_keeps_the_main_thread_while_the_line_moves(tmp_path, caplog):
    """Flink's and Spark's runners start their job server inside run(), which installs a SIGINT
    handler: Python allows that in the main thread only, so the job must run there."""
    import signal
    import threading

    class Pipe:
        def isatty(self):
            return False

    def job(on_started):
        signal.signal(signal.SIGINT, signal.getsignal(signal.SIGINT))   # what Beam's JobServer.start does
        time.sleep(1.5)
        return threading.current_thread() is threading.main_thread()

    display = ProgressDisplay(JobProgress(str(tmp_path / "_progress")), interval_seconds=1, stream=Pipe())
    with caplog.at_level(logging.INFO, logger="audio_labelling.progress"):
        assert run_watched(job, display) is True
    assert any(r.getMessage().startswith("progress: running") for r in caplog.records)


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_worker_log_levels_are_names_both_harnesses_read(level):
    """Flink's and Spark's job servers parse these options into Java's SdkHarnessOptions.LogLevel
    (TRACE, DEBUG, INFO, WARN, ERROR, OFF): WARNING failed the submission there."""
    from pipeline.console.logs import worker_log_args

    java_levels = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"}
    args = dict(a.lstrip("-").split("=", 1) for a in worker_log_args(level, []))
    levels = [args["default_sdk_harness_log_level"], *json.loads(args["sdk_harness_log_level_overrides"]).values()]
    assert set(levels) <= java_levels, levels
    for name in levels:   # and Python's harness reads each (logging.getLogger(m).setLevel(name))
        logging.getLogger("audio_labelling.level_check").setLevel(name)
