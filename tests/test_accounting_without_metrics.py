"""The accounting is data the pipeline writes, not Beam metrics: a run publishes with the right
counts when the runner reports attempted metric values only (Flink's and Spark's job servers;
attempted counters also count retried bundles twice), and when it reports no metrics at all.
The real DirectRunner runs the job; only its PipelineResult is narrowed, through main.run's seam."""
import json
import os

import pytest
from apache_beam.metrics.execution import MetricResult
from apache_beam.metrics.metric import MetricResults

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import run
from pipeline.runs.publish import finished_runs, read_manifest
from tests.shard_corpus import audio_bytes, make_tar


class _AttemptedOnlyMetrics(MetricResults):
    """Committed values absent; attempted ones doubled, as a retried bundle would leave them."""

    def __init__(self, inner):
        self._inner = inner

    def query(self, filter=None):
        found = self._inner.query(filter)
        return {kind: [MetricResult(r.key, None, r.attempted * 2 if kind == "counters" else r.attempted)
                       for r in results] for kind, results in found.items()}


class _ResultView:
    def __init__(self, result):
        self._result = result

    def __getattr__(self, name):
        return getattr(self._result, name)


class AttemptedOnly(_ResultView):
    def metrics(self):
        return _AttemptedOnlyMetrics(self._result.metrics())


class NoMetrics(_ResultView):
    def metrics(self):
        raise NotImplementedError("this runner reports no metrics")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """2 plain files, 1 broken file, 1 shard with 2 audio members and 1 ignored member."""
    folder = tmp_path_factory.mktemp("no_metrics_corpus")
    write_audio(str(folder / "a.wav"), tone(1.0, 16000), 16000)
    write_audio(str(folder / "b.flac"), noise(1.5, 22050), 22050)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    (folder / "shard-000.tar").write_bytes(make_tar([
        ("000.wav", audio_bytes("wav", tone(1.0, 16000, 330.0), 16000)),
        ("000.txt", b"not audio"),
        ("001.wav", audio_bytes("wav", noise(1.0, 16000), 16000)),
    ]))
    return str(folder)


@pytest.mark.parametrize("view", [AttemptedOnly, NoMetrics], ids=["attempted_only", "no_metrics"])
def test_publishes_with_right_counts_without_committed_metrics(tmp_path, tiny_checkpoint, corpus, view):
    out = str(tmp_path / "labels")
    summary = run(["--input", corpus, "--model", tiny_checkpoint, "--output", out, "--run_id", "r1"],
                  result_view=view)
    expected = {"discovered": 5, "labelled": 4, "errored": 1, "skipped": 0,
                "errors_by_type": {"decode/AudioDecodeError": 1}}
    assert summary.counts() == expected
    assert (summary.shards_read, summary.members_ignored, summary.segment_rows) == (1, 1, 4)
    assert finished_runs(out) == ["r1"]
    manifest = read_manifest(out, "r1")
    assert manifest["counts"] == expected
    assert manifest["tables"] == {"clips": 4, "errors": 1, "segments": 4}
    # The run's statistics are a file of the run, in its published attempt's folder.
    with open(os.path.join(out, manifest["stats"], "summary.json")) as f:
        assert json.load(f)["counts"]["discovered"] == 5
    # The rows agree with the counts.
    assert summary.clips.num_rows == 4 and summary.errors.num_rows == 1
