"""select_labels, per-class thresholds and label maps, against hand-worked cases."""
import numpy as np
import pytest

from transforms.scoring.labels import (LabelMap, LabelSelection, load_class_thresholds, load_label_map,
                               roll_up, select_labels)

LABELS = ["dog", "cat", "rain", "speech", "music"]
#                 dog   cat   rain  speech music
SCORES = np.array([0.90, 0.20, 0.55, 0.70, 0.05], np.float32)


def names(selected):
    return [s["label"] for s in selected]


def test_no_selection_returns_every_class_best_first():
    got = select_labels(SCORES, LABELS)
    assert names(got) == ["dog", "speech", "rain", "cat", "music"]
    assert [g["index"] for g in got] == [0, 3, 2, 1, 4]
    assert got[1]["score"] == pytest.approx(0.70)


def test_top_k_alone():
    assert names(select_labels(SCORES, LABELS, top_k=2)) == ["dog", "speech"]


def test_threshold_alone_keeps_scores_at_or_above_it():
    assert names(select_labels(SCORES, LABELS, threshold=0.55)) == ["dog", "speech", "rain"]
    assert select_labels(SCORES, LABELS, threshold=0.95) == []


def test_top_k_is_cut_first_then_thresholded():
    # top-3 is dog .90, speech .70, rain .55; the .6 threshold removes rain,
    # and cat (4th) does NOT move up into the freed place.
    assert names(select_labels(SCORES, LABELS, top_k=3, threshold=0.6)) == ["dog", "speech"]
    # A loose threshold leaves the top-k as it is.
    assert names(select_labels(SCORES, LABELS, top_k=3, threshold=0.1)) == ["dog", "speech", "rain"]


def test_class_thresholds_override_the_global_one_and_nan_falls_back():
    per_class = np.array([0.95, np.nan, 0.5, np.nan, 0.01])
    # dog needs .95 (has .90): dropped. rain needs .5 (has .55): kept although the global is .6.
    # speech falls back to the global .6 (has .70): kept. cat falls back to .6 (has .2): dropped.
    # music needs .01 (has .05) but is outside the top-4.
    got = select_labels(SCORES, LABELS, top_k=4, threshold=0.6, class_thresholds=per_class)
    assert names(got) == ["speech", "rain"]
    # Without a global threshold the NaN classes have none at all.
    got = select_labels(SCORES, LABELS, class_thresholds=per_class)
    assert names(got) == ["speech", "rain", "cat", "music"]


def test_threshold_compares_at_float32_precision():
    # float32(0.7) is 0.699999988..., which is below the float64 0.7; the stored score must still pass.
    s = np.array([np.float32(0.7), 0.1], np.float32)
    assert names(select_labels(s, ["a", "b"], threshold=0.7)) == ["a"]


def test_ties_keep_class_order():
    s = np.array([0.5, 0.8, 0.5, 0.5], np.float32)
    assert names(select_labels(s, ["a", "b", "c", "d"], top_k=3)) == ["b", "a", "c"]


@pytest.mark.parametrize("kwargs, match", [
    ({"top_k": 0}, "top_k"), ({"top_k": 1.5}, "top_k"), ({"threshold": 1.5}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"class_thresholds": np.zeros(3)}, "shape"),
    ({"class_thresholds": np.array([0, 0, -0.1, 0, 0])}, "rain"),
])
def test_bad_selection_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_labels(SCORES, LABELS, **kwargs)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_load_class_thresholds(tmp_path):
    path = write(tmp_path, "t.csv", "label,threshold\n# comment\nrain, 0.3\n\"speech\",0.8\n")
    got = load_class_thresholds(path, LABELS)
    assert got[2] == 0.3 and got[3] == 0.8
    assert np.isnan(got[[0, 1, 4]]).all()


def test_load_class_thresholds_handles_quoted_names_with_commas(tmp_path):
    labels = ["Male speech, man speaking", "Dog"]
    path = write(tmp_path, "t.csv", 'label,threshold\n"Male speech, man speaking",0.25\n')
    np.testing.assert_array_equal(load_class_thresholds(path, labels), [0.25, np.nan])


@pytest.mark.parametrize("body, match", [
    ("label,threshold\nrian,0.3\n", r"'rian' \(did you mean 'rain'\?\)"),
    ("label,threshold\nrain,0.3\nrain,0.4\n", "line 3: label 'rain' already given on line 2"),
    ("label,threshold\nrain,high\n", "line 2: threshold 'high' is not a number"),
    ("label,threshold\nrain,1.2\n", r"not in \[0, 1\]"),
    ("name,threshold\nrain,0.2\n", "lacks column"),
    ("label,threshold\nMale speech, man speaking,0.2\n", "quote label names"),
])
def test_load_class_thresholds_errors(tmp_path, body, match):
    with pytest.raises(ValueError, match=match):
        load_class_thresholds(write(tmp_path, "t.csv", body), LABELS)


def test_label_map_and_roll_up_take_the_max_of_sources(tmp_path):
    path = write(tmp_path, "map.csv",
                 "source_label,target_label\ndog,animal\ncat,animal\nrain,weather\ndog,animal\ndog,pet\n")
    m = load_label_map(path)
    assert m.targets == ["animal", "weather", "pet"]
    assert m.sources_of("animal") == ["dog", "cat"] and m.targets_of("dog") == ["animal", "pet"]
    assert not m.is_many_to_one()
    batch = np.stack([SCORES, np.array([0.1, 0.6, 0.0, 0.9, 0.9], np.float32)])
    rolled, targets = roll_up(batch, LABELS, m)
    assert targets == ["animal", "weather", "pet"]
    # animal = max(dog, cat); weather = rain; pet = dog; speech and music are dropped.
    np.testing.assert_allclose(rolled, [[0.90, 0.55, 0.90], [0.6, 0.0, 0.1]])
    one, _ = roll_up(SCORES, LABELS, m)
    np.testing.assert_allclose(one, [0.90, 0.55, 0.90])


def test_roll_up_unknown_sources():
    m = LabelMap((("dgo", "animal"), ("cat", "animal"), ("thunder", "weather")))
    with pytest.raises(ValueError, match="did you mean 'dog'"):
        roll_up(SCORES, LABELS, m)
    rolled, targets = roll_up(SCORES, LABELS, m, strict=False)
    assert targets == ["animal", "weather"]
    np.testing.assert_allclose(rolled, [0.20, 0.0])


def test_load_label_map_errors(tmp_path):
    with pytest.raises(ValueError, match="lacks column"):
        load_label_map(write(tmp_path, "a.csv", "source,target\na,b\n"))
    with pytest.raises(ValueError, match="line 3: empty"):
        load_label_map(write(tmp_path, "b.csv", "source_label,target_label\na,b\nc,\n"))
    with pytest.raises(ValueError, match="no rows"):
        load_label_map(write(tmp_path, "c.csv", "source_label,target_label\n"))


def test_label_selection_in_model_vocabulary(tmp_path):
    path = write(tmp_path, "t.csv", "label,threshold\ndog,0.95\n")
    selection = LabelSelection.load(LABELS, top_k=3, threshold=0.5, class_thresholds_path=path)
    # top-3: dog .90 (needs .95: out), speech .70, rain .55 (global .5: both in)
    assert names(selection.select(SCORES)) == ["speech", "rain"]
    assert selection.output_labels == LABELS


def test_label_selection_through_a_label_map(tmp_path):
    import pickle

    m = write(tmp_path, "map.csv", "source_label,target_label\ndog,animal\ncat,animal\nrain,weather\nspeech,voice\n")
    t = write(tmp_path, "t.csv", "label,threshold\nvoice,0.8\n")   # thresholds name TARGET labels
    selection = pickle.loads(pickle.dumps(LabelSelection.load(LABELS, top_k=None, threshold=0.5,
                                                               class_thresholds_path=t, label_map_path=m)))
    assert selection.output_labels == ["animal", "weather", "voice"]
    np.testing.assert_allclose(selection.output_scores(SCORES), [0.90, 0.55, 0.70])
    got = selection.select(SCORES)
    # animal .90 >= .5, weather .55 >= .5, voice .70 < .8; index is the target's position.
    assert [(g["label"], g["index"]) for g in got] == [("animal", 0), ("weather", 1)]


def test_label_selection_fails_fast_on_bad_files_and_values(tmp_path):
    m = write(tmp_path, "map.csv", "source_label,target_label\ndgo,animal\n")
    with pytest.raises(ValueError, match="did you mean 'dog'"):
        LabelSelection.load(LABELS, label_map_path=m)
    good_map = write(tmp_path, "m2.csv", "source_label,target_label\ndog,animal\n")
    t = write(tmp_path, "t.csv", "label,threshold\ndog,0.5\n")    # a model label, but the map renamed it
    with pytest.raises(ValueError, match="not among the 1 available labels"):
        LabelSelection.load(LABELS, class_thresholds_path=t, label_map_path=good_map)
    with pytest.raises(ValueError, match="threshold"):
        LabelSelection.load(LABELS, threshold=2.0)
    with pytest.raises(ValueError, match="top_k"):
        LabelSelection.load(LABELS, top_k=0)
