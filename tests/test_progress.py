"""The progress line appears while a run of a few dozen clips is going, and counts add up."""
import logging
import re

from pipeline.demo.audio import chirp, tone, write_audio
from pipeline.main import run
from transforms.progress import ProgressLog, ProgressSettings


def test_progress_lines_during_a_run(tmp_path, tiny_checkpoint, caplog):
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(30):
        make = tone if i % 2 else chirp
        write_audio(str(audio / f"clip_{i:02d}.wav"), make(1.0 + i % 3, 16000), 16000)
    (audio / "broken.wav").write_bytes(b"not audio")
    # The worker's own lines are DEBUG when it reports to a launcher (which shows the job's line).
    with caplog.at_level(logging.DEBUG, logger="audio_labelling.progress"):
        run(["--input", str(audio), "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
             "--batch_size", "4", "--progress_seconds", "0"])
    records = [r for r in caplog.records if r.name == "audio_labelling.progress"]
    lines = [r.getMessage() for r in records if r.getMessage().startswith("progress [pid")]
    assert len(lines) >= 30
    numbers = [tuple(map(int, re.search(r"(\d+) files decoded, (\d+) windows scored .* (\d+) clips labelled, "
                                        r"(\d+) errors", line).groups())) for line in lines]
    final = numbers[-1]
    assert final == (30, 30, 30, 1)
    # Counts only ever grow: it is one running tally, not a per-bundle count.
    assert all(a <= b for prev, cur in zip(numbers, numbers[1:]) for a, b in zip(prev, cur))
    # The launcher's job-wide line, at INFO: it grows too, and ends on the job's totals.
    job = [r.getMessage() for r in records if r.getMessage().startswith("progress: ") and r.levelno == logging.INFO]
    totals = [tuple(map(int, found.groups())) for found in
              (re.search(r"(\d+) discovered, (\d+) decoded, (\d+) labelled, (\d+) errored", line) for line in job)
              if found]
    assert totals and totals[-1] == (31, 30, 30, 1) and "(finished," in job[-1]
    assert all(a <= b for prev, cur in zip(totals, totals[1:]) for a, b in zip(prev, cur))


def test_interval_limits_how_often_it_logs(caplog):
    log = ProgressLog(ProgressSettings(interval_seconds=3600))
    with caplog.at_level(logging.INFO, logger="audio_labelling.progress"):
        for _ in range(100):
            log.add(windows_scored=1)
    assert not caplog.records and log.counts["windows_scored"] == 100
    assert "100 windows scored" in log.line()
