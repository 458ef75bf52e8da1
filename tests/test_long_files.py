"""Long recordings end to end on DirectRunner: windows, the segments table, clip aggregation."""
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import run
from pipeline.runs.layout import published_table_dir
from pipeline.runs.summary import read_table
from tests.audio_corpus import write_long, write_nan_midway
from transforms.io.checkpoint import inspect_checkpoint
from transforms.audio.fbank import ast_input_features
from transforms.scoring.labels import activate

NUM_LABELS = 12      # the tiny checkpoint's; top_k = all of them, so rows carry every score
WINDOW = 10.24       # seconds: the tiny checkpoint's 1024 frames
# Just over 1, 2 and 3 windows: 50 ms, 10 ms and 1 s more.
OVER = {"over1": WINDOW + 0.05, "over2": 2 * WINDOW + 0.01, "over3": 3 * WINDOW + 1.0}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long_corpus")
    return {
        "long": write_long(str(folder / "long95.wav")),
        "short": write_audio(str(folder / "short_tone.wav"), tone(3.0, 16000, 440.0), 16000),
        "nan": write_nan_midway(str(folder / "nan_at_30s.wav"), seconds=40.0, nan_at=30.0),
        **{name: write_audio(str(folder / f"{name}.wav"),
                             tone(seconds, 16000, 300.0 + 100 * i) + noise(seconds, 16000, i), 16000)
           for i, (name, seconds) in enumerate(OVER.items())},
    }


def labelled(corpus, checkpoint, out, *extra):
    summary = run(["--input", os.path.dirname(corpus["long"]), "--output", out, "--model", checkpoint,
                   "--batch_size", "4", "--top_k", str(NUM_LABELS), "--run_id", "long", *extra])
    segments = read_table(out, "long", "segments").to_pylist()
    return summary, segments


@pytest.fixture(scope="module")
def no_overlap(corpus, tiny_checkpoint, tmp_path_factory):
    return labelled(corpus, tiny_checkpoint, str(tmp_path_factory.mktemp("out_max")))


@pytest.fixture(scope="module")
def half_hop(corpus, tiny_checkpoint, tmp_path_factory):
    return labelled(corpus, tiny_checkpoint, str(tmp_path_factory.mktemp("out_mean")),
                    "--hop_seconds", "5.12", "--aggregate", "mean")


@pytest.fixture(scope="module")
def direct_model(tiny_checkpoint):
    from transforms.mindspore_inference import load_runner

    return load_runner(tiny_checkpoint, "native", batch_size=4)


def scores_of(labels) -> np.ndarray:
    out = np.full(NUM_LABELS, np.nan, np.float32)
    for lab in labels:
        out[lab["index"]] = lab["score"]
    assert not np.isnan(out).any()
    return out


def segments_of(segments, uri):
    return sorted((s for s in segments if s["source_uri"] == uri), key=lambda s: s["window_index"])


def direct_scores(model, checkpoint, path, spans):
    """The model called by hand on the given [start, end) second spans of the file's audio."""
    wave, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000
    features = inspect_checkpoint(checkpoint).features
    batch = np.stack([ast_input_features(wave[round(a * rate):round(b * rate)], features) for a, b in spans])
    logits, _ = model.predict(batch)
    return activate(logits, "sigmoid")


def test_every_input_lands_in_exactly_one_table(corpus, no_overlap):
    summary, segments = no_overlap
    good = [corpus[name] for name in ("long", "short", *OVER)]
    assert sorted(r["source_uri"] for r in summary.clips.to_pylist()) == sorted(good)
    [error] = summary.errors.to_pylist()
    # Decoding failed at 30 s, after two windows had gone to inference: an error row, no segments.
    assert error["source_uri"] == corpus["nan"] and error["stage"] == "decode"
    assert "NaN" in error["message"] and "after 2 window(s)" in error["message"]
    assert {s["source_uri"] for s in segments} == set(good)


def test_windows_of_different_files_share_inference_batches(no_overlap):
    summary, _ = no_overlap
    # 10 + 1 + 2 + 3 + 4 windows of the labelled files + 2 of the file that failed at 30 s, in
    # batches of 4: 6 batches; batching per file would take 3 + 1 + 1 + 1 + 1 + 1 = 8.
    assert (summary.windows_scored, summary.inference_batches) == (22, 6)


def test_95_s_file_gets_10_windows_at_the_right_times(corpus, no_overlap):
    summary, segments = no_overlap
    rows = segments_of(segments, corpus["long"])
    assert [s["window_index"] for s in rows] == list(range(10))
    # Nine full windows, then the last one end-aligned (84.76-95.0 s): full of real audio.
    assert [s["start_seconds"] for s in rows] == pytest.approx([10.24 * k for k in range(9)] + [95.0 - WINDOW])
    assert [s["end_seconds"] for s in rows] == pytest.approx([10.24 * k for k in range(1, 10)] + [95.0])
    assert all(s["clip_id"] == corpus["long"] and s["run_id"] == "long" for s in rows)
    clip = {r["source_uri"]: r for r in summary.clips.to_pylist()}[corpus["long"]]
    assert (clip["num_windows"], clip["aggregation"], clip["duration_seconds"]) == (10, "max", 95.0)
    short = segments_of(segments, corpus["short"])
    assert [(s["start_seconds"], s["end_seconds"]) for s in short] == [(0.0, 3.0)]


def test_segment_scores_equal_a_direct_model_call(corpus, no_overlap, direct_model, tiny_checkpoint):
    _, segments = no_overlap
    rows = segments_of(segments, corpus["long"])
    # The tone (0-20 s), noise/silence boundary (40.96-51.2 s), chirp and the end-aligned last window.
    picked = [rows[i] for i in (0, 4, 7, 9)]
    expected = direct_scores(direct_model, tiny_checkpoint, corpus["long"],
                             [(s["start_seconds"], s["end_seconds"]) for s in picked])
    for row, scores in zip(picked, expected):
        np.testing.assert_allclose(scores_of(row["labels"]), scores, atol=1e-5, rtol=0)
    # The parts differ, and so do the window scores.
    assert not np.allclose(expected[0], expected[2], atol=1e-3)


def test_clip_scores_are_the_max_over_segments(corpus, no_overlap):
    summary, segments = no_overlap
    for clip in summary.clips.to_pylist():
        per_window = np.stack([scores_of(s["labels"]) for s in segments_of(segments, clip["source_uri"])])
        np.testing.assert_array_equal(scores_of(clip["labels"]), per_window.max(axis=0))
        assert [lab["index"] for lab in clip["labels"]] == list(np.argsort(-per_window.max(axis=0), kind="stable"))


def test_half_hop_windows_and_end_aligned_last_window(corpus, half_hop, direct_model, tiny_checkpoint):
    summary, segments = half_hop
    rows = segments_of(segments, corpus["long"])
    assert len(rows) == 18
    assert [s["start_seconds"] for s in rows] == pytest.approx([5.12 * k for k in range(17)] + [95.0 - WINDOW])
    assert [s["end_seconds"] for s in rows] == pytest.approx([5.12 * k + 10.24 for k in range(17)] + [95.0])
    last = rows[-1]
    assert (last["start_seconds"], last["end_seconds"]) == pytest.approx((84.76, 95.0))
    [expected] = direct_scores(direct_model, tiny_checkpoint, corpus["long"], [(84.76, 95.0)])
    np.testing.assert_allclose(scores_of(last["labels"]), expected, atol=1e-5, rtol=0)
    assert summary.errors.num_rows == 1 and summary.clips.num_rows == 5


def expected_spans(seconds: float, hop: float) -> list[tuple[float, float]]:
    """The rule, in seconds: full windows every hop, then one window ending at the file's end."""
    spans, start = [], 0.0
    while start + WINDOW <= seconds + 1e-9:
        spans.append((start, start + WINDOW))
        start += hop
    if spans[-1][1] < seconds - 1e-9:
        spans.append((seconds - WINDOW, seconds))
    return spans


@pytest.mark.parametrize("name", list(OVER))
@pytest.mark.parametrize("hop", [None, 5.12])
def test_just_over_1_2_3_windows_every_window_is_real_audio(corpus, no_overlap, half_hop, direct_model,
                                                             tiny_checkpoint, name, hop):
    """Files just over 1, 2 and 3 windows: the last window ends at the file's end and is scored
    on 10.24 s of real audio (the same scores as the model called on the file's last 10.24 s)."""
    summary, segments = no_overlap if hop is None else half_hop
    seconds = soundfile.info(corpus[name]).frames / 16000    # the file as written: 16 kHz, whole samples
    assert seconds == pytest.approx(OVER[name], abs=1e-3)
    rows = segments_of(segments, corpus[name])
    spans = expected_spans(seconds, hop or WINDOW)
    assert len(spans) == {("over1", None): 2, ("over2", None): 3, ("over3", None): 4,
                          ("over1", 5.12): 2, ("over2", 5.12): 4, ("over3", 5.12): 6}[(name, hop)]
    assert [(s["start_seconds"], s["end_seconds"]) for s in rows] == [pytest.approx(x) for x in spans]
    assert all(s["end_seconds"] - s["start_seconds"] == pytest.approx(WINDOW) for s in rows)
    expected = direct_scores(direct_model, tiny_checkpoint, corpus[name], [spans[0], spans[-1]])
    np.testing.assert_allclose(scores_of(rows[0]["labels"]), expected[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores_of(rows[-1]["labels"]), expected[1], atol=1e-5, rtol=0)
    clip = {r["source_uri"]: r for r in summary.clips.to_pylist()}[corpus[name]]
    assert clip["num_windows"] == len(spans)
    assert clip["duration_seconds"] == pytest.approx(seconds)


def test_clip_scores_are_the_mean_over_segments(corpus, half_hop):
    summary, segments = half_hop
    for clip in summary.clips.to_pylist():
        per_window = np.stack([scores_of(s["labels"]) for s in segments_of(segments, clip["source_uri"])])
        assert (clip["num_windows"], clip["aggregation"]) == (len(per_window), "mean")
        np.testing.assert_allclose(scores_of(clip["labels"]), per_window.mean(axis=0), atol=1e-6, rtol=0)


def test_segments_table_is_parquet_with_its_schema(no_overlap, tmp_path):
    from schemas.tables import SEGMENTS_SCHEMA

    summary, _ = no_overlap
    folder = published_table_dir(summary.output, "long", "segments")
    files = [f for f in os.listdir(folder) if f.endswith(".parquet")]
    assert files and pq.read_schema(os.path.join(folder, files[0])).equals(SEGMENTS_SCHEMA, check_metadata=True)


def test_hop_longer_than_the_window_is_a_usage_error(corpus, tiny_checkpoint, tmp_path):
    from pipeline.main import main

    assert main(["--input", corpus["short"], "--output", str(tmp_path), "--model", tiny_checkpoint,
                 "--hop_seconds", "11"]) == 2
