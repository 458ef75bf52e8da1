"""The end-of-run accounting (pipeline/summary.py), on hand-made tables."""
import pyarrow as pa
import pytest

from pipeline.summary import AccountingError, RunSummary
from schemas.tables import ERRORS_SCHEMA


def summary(num_windows: dict, segment_clip_ids: list[str]) -> RunSummary:
    clips = pa.table({"clip_id": list(num_windows), "num_windows": list(num_windows.values())})
    segments = pa.table({"clip_id": pa.array(segment_clip_ids, pa.string())})
    return RunSummary(run_id="r", output="/x", discovered=len(num_windows), clips=clips,
                      errors=ERRORS_SCHEMA.empty_table(), segments=segments)


def test_segments_must_match_each_clips_num_windows():
    summary({"a": 2, "b": 1}, ["a", "b", "a"]).check_accounting()
    with pytest.raises(AccountingError, match="segments"):
        summary({"a": 2, "b": 1}, ["a", "b"]).check_accounting()          # a window lost
    with pytest.raises(AccountingError, match="segments"):
        summary({"a": 1}, ["a", "c"]).check_accounting()                  # segments of an unlabelled clip


def test_render_reports_throughput_when_timed():
    import pyarrow as pa

    from pipeline.summary import RunSummary
    from schemas.tables import CLIPS_SCHEMA, ERRORS_SCHEMA

    clips = pa.Table.from_pylist([{"clip_id": f"c{i}", "source_uri": f"c{i}", "run_id": "r", "labels": []}
                                  for i in range(10)], schema=CLIPS_SCHEMA)
    summary = RunSummary(run_id="r", output="/o", discovered=10, clips=clips,
                         errors=ERRORS_SCHEMA.empty_table(), windows_scored=25, seconds=5.0)
    assert "throughput:        2.00 clips/s, 5.00 windows/s over 5.0 s" in summary.render()
    summary.seconds = None
    assert "throughput" not in summary.render()
