"""Clip scores from window scores, and the partial-failure rule (transforms/scoring/aggregate.py)."""
import numpy as np
from apache_beam.pvalue import TaggedOutput
import pytest
from apache_beam.ml.inference.base import PredictionResult

from transforms.scoring.aggregate import AssembledClip, aggregate_scores, assemble_clip, duplicate_input_errors
from transforms.elements import (ClipInfo, ClipOutcome, FeatureWindow, InputError, ScoredWindow,
                                 WindowFailure, WindowScores)
from transforms.label_rows import FAILURES, ScoreWindows

CLIP = ClipInfo(clip_id="a.wav", source_uri="a.wav", duration_seconds=25.0, original_sample_rate=16000,
                channels=1)
SCORES = np.array([[0.1, 0.9, 0.3], [0.7, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)


def windows(scores=SCORES):
    return [WindowScores(i, 10.24 * i, min(10.24 * (i + 1), 25.0), s) for i, s in enumerate(scores)]


def test_max_and_mean_over_windows():
    np.testing.assert_array_equal(aggregate_scores(SCORES, "max"), np.float32([0.7, 0.9, 0.6]))
    np.testing.assert_allclose(aggregate_scores(SCORES, "mean"), [0.4, 1.6 / 3, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(aggregate_scores(SCORES[:1], "mean"), SCORES[0])
    with pytest.raises(ValueError):
        aggregate_scores(SCORES, "median")
    with pytest.raises(ValueError):
        aggregate_scores(np.zeros((0, 3)), "max")


def test_assembled_in_window_order_whatever_the_arrival_order():
    result = assemble_clip(ClipOutcome("a.wav", CLIP, 3), reversed(windows()), [], "max")
    assert isinstance(result, AssembledClip)
    assert [w.window_index for w in result.windows] == [0, 1, 2]
    np.testing.assert_array_equal(result.scores, np.float32([0.7, 0.9, 0.6]))
    assert result.aggregation == "max" and result.clip == CLIP


def test_a_failed_window_sends_the_clip_to_errors():
    failure = WindowFailure(1, 10.24, 20.48, "RuntimeError", "device lost")
    ws = windows()
    result = assemble_clip(ClipOutcome("a.wav", CLIP, 3), [ws[0], ws[2]], [failure], "max")
    assert isinstance(result, InputError)
    assert (result.stage, result.error_type, result.clip_id) == ("inference", "RuntimeError", "a.wav")
    assert "1 of 3 window(s)" in result.message and "window 1 (10.24-20.48 s)" in result.message
    assert "device lost" in result.message


def test_a_decode_failure_after_some_windows_is_the_clips_error():
    error = InputError("a.wav", "decode", "AudioDecodeError", "audio contains NaN", "a.wav")
    result = assemble_clip(ClipOutcome("a.wav", CLIP, 2, error), windows()[:2], [], "max")
    assert isinstance(result, InputError) and result.stage == "decode"
    assert "audio contains NaN" in result.message and "after 2 window(s)" in result.message


def test_missing_windows_are_an_error_not_a_label():
    result = assemble_clip(ClipOutcome("a.wav", CLIP, 3), windows()[:2], [], "max")
    assert isinstance(result, InputError) and result.error_type == "WindowsMissing"


def test_an_input_given_twice_is_an_error_per_copy():
    errors = duplicate_input_errors([ClipOutcome("a.wav", CLIP, 3), ClipOutcome("a.wav", CLIP, 3)])
    assert [e.error_type for e in errors] == ["DuplicateInput", "DuplicateInput"]


def test_score_windows_keeps_only_scores():
    window = FeatureWindow(CLIP, 2, 20.48, 25.0, np.zeros((1024, 128), np.float32))
    scored = ScoredWindow(CLIP, 2, 20.48, 25.0, logits=np.float32([0.0, 2.0]), pooled=np.zeros(4, np.float32))
    fn = ScoreWindows("sigmoid")
    fn.setup()   # as Beam does before any bundle
    outputs = list(fn.process(PredictionResult(window, scored)))
    # The window's scores, plus its tally for the run's statistics (transforms/run_stats.py).
    [(key, out)] = [o for o in outputs if not isinstance(o, TaggedOutput)]
    assert [o.value for o in outputs if isinstance(o, TaggedOutput)] == [("windows_scored", 1)]
    assert out.embedding is None   # pooled outputs travel on only with --emit_embeddings
    assert key == "a.wav" and (out.window_index, out.start_seconds, out.end_seconds) == (2, 20.48, 25.0)
    np.testing.assert_allclose(out.scores, [0.5, 1 / (1 + np.exp(-2.0))], rtol=1e-6)
    [tagged] = list(fn.process(PredictionResult(window, ValueError("bad"))))
    assert tagged.tag == FAILURES and tagged.value[1] == WindowFailure(2, 20.48, 25.0, "ValueError", "bad")
