import numpy as np
import pytest

from transforms.scoring.labels import activate, top_k


def test_sigmoid_matches_formula_and_survives_extremes():
    logits = np.array([[-1000.0, -2.0, 0.0, 3.0, 1000.0]])
    scores = activate(logits, "sigmoid")
    np.testing.assert_allclose(scores[0, 1:4], 1 / (1 + np.exp(-logits[0, 1:4])), rtol=1e-6)
    assert scores[0, 0] == 0.0 and scores[0, 4] == 1.0
    assert np.isfinite(scores).all()


def test_softmax_sums_to_one():
    scores = activate(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), "softmax")
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(scores[1], 1 / 3, rtol=1e-6)


def test_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation"):
        activate(np.zeros((1, 2)), "relu")


def test_top_k_orders_best_first_and_keeps_index():
    labels = ["a", "b", "c", "d"]
    got = top_k(np.array([0.1, 0.9, 0.5, 0.9], np.float32), labels, 3)
    assert [g["label"] for g in got] == ["b", "d", "c"]
    assert [g["index"] for g in got] == [1, 3, 2]
    assert got[0]["score"] == pytest.approx(0.9)
    assert len(top_k(np.zeros(4), labels, 10)) == 4
