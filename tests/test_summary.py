"""The end-of-run accounting: the pipeline's own tallies (transforms/run_stats.py), combined on the
DirectRunner from hand-made rows, then checked by pipeline/runs/summary.py as the launcher does."""
import json

import apache_beam as beam
import pytest

from pipeline.runs.layout import Attempt
from pipeline.runs.summary import AccountingError, NothingDiscoveredError, RunSummary
from transforms.run_stats import DISCOVERED, SKIPPED, SOURCES, RunStats


def stats_of(tmp_path, num_windows: dict, segment_clip_ids: list[str], errors=(), tallies=None) -> dict:
    clips = [{"clip_id": c, "num_windows": n, "labels": [{"label": f"L{n}", "index": n, "score": 0.5}]}
             for c, n in num_windows.items()]
    segments = [{"clip_id": c} for c in segment_clip_ids]
    errors = [{"stage": stage, "error_type": kind} for stage, kind in errors]
    if tallies is None:
        tallies = [(DISCOVERED, len(num_windows) + len(errors)), (SOURCES, 1)]
    path = str(tmp_path / "summary.json")
    with beam.Pipeline("DirectRunner") as p:
        ({"tallies": p | "T" >> beam.Create(tallies), "clips": p | "C" >> beam.Create(clips),
          "segments": p | "S" >> beam.Create(segments), "errors": p | "E" >> beam.Create(errors)}
         | RunStats(path))
    with open(path) as f:
        return json.load(f)


def summary(tmp_path, *args, **kwargs) -> RunSummary:
    return RunSummary(Attempt("/x", "r", "a1"), stats_of(tmp_path, *args, **kwargs))


def test_segments_must_match_each_clips_num_windows(tmp_path):
    summary(tmp_path, {"a": 2, "b": 1}, ["a", "b", "a"]).check_accounting(verify_tables=False)
    with pytest.raises(AccountingError, match="segments"):
        summary(tmp_path, {"a": 2, "b": 1}, ["a", "b"]).check_accounting(verify_tables=False)   # a window lost
    with pytest.raises(AccountingError, match=r"segments.*'c'"):
        summary(tmp_path, {"a": 1}, ["a", "c"]).check_accounting(verify_tables=False)           # an unlabelled clip's


def test_discovered_must_equal_labelled_errored_skipped(tmp_path):
    s = summary(tmp_path, {"a": 1, "b": 1}, ["a", "b"], errors=[("decode", "LibsndfileError")],
                tallies=[(DISCOVERED, 3), (DISCOVERED, 2), (SKIPPED, 2), (SOURCES, 5)])
    s.check_accounting(verify_tables=False)
    assert s.counts() == {"discovered": 5, "labelled": 2, "errored": 1, "skipped": 2,
                          "errors_by_type": {"decode/LibsndfileError": 1}}
    lost = summary(tmp_path, {"a": 1}, ["a"], tallies=[(DISCOVERED, 2), (SOURCES, 2)])
    with pytest.raises(AccountingError, match="2 inputs discovered but 1 labelled"):
        lost.check_accounting(verify_tables=False)


def test_a_clip_id_labelled_twice_is_refused(tmp_path):
    # Two clips rows with one id (hand-made: stats_of's dict cannot hold them).
    path = str(tmp_path / "dup.json")
    with beam.Pipeline("DirectRunner") as p:
        rows = [{"clip_id": "a", "num_windows": 1, "labels": []}] * 2
        ({"tallies": p | "T" >> beam.Create([(DISCOVERED, 2)]), "clips": p | "C" >> beam.Create(rows),
          "segments": p | "S" >> beam.Create([{"clip_id": "a"}] * 2), "errors": p | "E" >> beam.Create([])}
         | RunStats(path))
    with open(path) as f:
        dup = RunSummary(Attempt("/x", "r", "a1"), json.load(f))
    with pytest.raises(AccountingError, match="duplicate clip ids.*'a'"):
        dup.check_accounting(verify_tables=False)


def test_summary_figures_come_from_the_stats(tmp_path):
    s = summary(tmp_path, {"a": 2, "b": 1, "c": 2}, ["a", "a", "b", "c", "c"],
                tallies=[(DISCOVERED, 3), (SOURCES, 3), ("windows_scored", 5), ("inference_batches", 2)])
    assert s.top_labels() == [("L2", 2), ("L1", 1)]
    assert (s.labelled, s.segment_rows, s.windows_scored, s.inference_batches) == (3, 5, 5, 2)
    assert "most frequent top label: L2 (2), L1 (1)" in s.render()
    s.check_not_empty()
    with pytest.raises(NothingDiscoveredError):
        summary(tmp_path, {}, [], errors=[("discover", "NoFilesMatched")],
                tallies=[(DISCOVERED, 1)]).check_not_empty()


def test_render_reports_throughput_when_timed(tmp_path):
    s = summary(tmp_path, {f"c{i}": 1 for i in range(10)}, [f"c{i}" for i in range(10)],
                tallies=[(DISCOVERED, 10), ("windows_scored", 25)])
    s.seconds = 5.0
    assert "throughput:        2.00 clips/s, 5.00 windows/s over 5.0 s" in s.render()
    s.seconds = None
    assert "throughput" not in s.render()


def test_render_gives_audio_per_second_unlabelled_clips_and_skipped(tmp_path):
    path = str(tmp_path / "s.json")
    rows = [{"clip_id": f"c{i}", "num_windows": 1, "duration_seconds": 30.0,
             "labels": [] if i < 3 else [{"label": "L", "index": 0, "score": 0.9}]} for i in range(10)]
    with beam.Pipeline("DirectRunner") as p:
        ({"tallies": p | "T" >> beam.Create([(DISCOVERED, 10), (SOURCES, 10)]), "clips": p | "C" >> beam.Create(rows),
          "segments": p | "S" >> beam.Create([{"clip_id": r["clip_id"]} for r in rows]),
          "errors": p | "E" >> beam.Create([])}
         | RunStats(path))
    with open(path) as f:
        s = RunSummary(Attempt("/x", "r", "a1"), json.load(f))
    assert (s.audio_seconds, s.clips_without_labels) == (300.0, 3)
    s.seconds = 5.0
    text = s.render()
    assert "clips labelled:    10 (10 windows, 5.0 min of audio)" in text
    assert "clips that kept no label: 3 of 10 (no label passed the threshold)" in text
    assert "throughput:        2.00 clips/s (60.0 s of audio per second) over 5.0 s" in text
    assert "clips skipped" not in text
    s.incremental = True
    assert "clips skipped:     0 (labelled by an earlier run)" in s.render()
