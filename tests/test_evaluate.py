"""pipeline.evaluate on small crafted clips tables; every expected number is worked out by hand."""
import datetime
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.evaluate import (EvaluationError, average_precision, evaluate, load_truth, main,
                               match_keys)
from schemas.tables import CLIPS_SCHEMA
from transforms.scoring.labels import load_label_map

WHEN = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def clips_table(rows, model_labels, with_scores=False):
    """rows: (source_uri, [(label, score), ...] best first[, full score list])."""
    out = []
    for row in rows:
        uri, kept = row[0], row[1]
        record = {
            "clip_id": uri, "source_uri": uri, "duration_seconds": 5.0, "original_sample_rate": 44100,
            "channels": 1,
            "labels": [{"label": name, "index": model_labels.index(name), "score": score} for name, score in kept],
            "activation": "sigmoid", "model_id": "m", "model_sha256": "0" * 64, "run_id": "r",
            "labelled_at": WHEN}
        if with_scores:
            record["scores"] = row[2]
        out.append(record)
    # The clips schema always has the scores column (null unless --emit_scores).
    return pa.Table.from_pylist(out, schema=CLIPS_SCHEMA)


def write_csv(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def by_label(report):
    return {c["label"]: c for c in report["per_class"]}


# --- average precision -------------------------------------------------------------------------------------
def test_average_precision_by_hand():
    # Ranked: pos .9, neg .8, pos .4, neg .1 -> precisions at the positives 1/1 and 2/3.
    assert average_precision(np.array([0.9, 0.8, 0.4, 0.1]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # Every positive first: 1.
    assert average_precision(np.array([0.3, 0.9, 0.1]), np.array([0, 1, 0])) == pytest.approx(1.0)
    # No positive: undefined.
    assert average_precision(np.array([0.3, 0.9]), np.array([0, 0])) is None


def test_average_precision_ties_share_one_precision_whatever_the_order():
    # pos .9; then a tie at .6 between a positive listed FIRST and a negative: both are retrieved
    # together at .6, so the tied positive gets 2/3 (not the 2/2 a lucky order would give).
    assert average_precision(np.array([0.9, 0.6, 0.6]), np.array([1, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([0.9, 0.6, 0.6]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_zero_scored_positives_add_nothing():
    # positives: .7 (precision 1/1) and two scored 0 -> (1 + 0 + 0) / 3
    assert average_precision(np.array([0.7, 0.0, 0.2, 0.0]), np.array([1, 1, 0, 1])) == pytest.approx(1 / 3)


# --- single label ------------------------------------------------------------------------------------------
MODEL = ["Dog", "Cat", "Rain", "Speech", "Bark"]
ESC_ROWS = [
    ("/data/a.wav", [("Bark", 0.9), ("Dog", 0.6), ("Speech", 0.2)]),   # -> dog, truth dog: right
    ("/data/b.wav", [("Dog", 0.7), ("Cat", 0.5), ("Rain", 0.1)]),      # -> dog, truth cat: wrong
    ("/data/c.wav", [("Rain", 0.8), ("Speech", 0.3), ("Cat", 0.2)]),   # -> rain, truth rain: right
    ("/data/d.wav", [("Speech", 0.9), ("Dog", 0.4), ("Cat", 0.1)]),    # Speech is unmapped: wrong
    ("/elsewhere/zzz.wav", [("Cat", 0.9)]),                            # in no ground truth
]
ESC_TRUTH = ("filename,fold,target,category,esc10,src_file,take\n"
             "a.wav,1,0,dog,True,1,A\nb.wav,1,5,cat,True,2,A\nc.wav,2,10,rain,True,3,A\n"
             "d.wav,2,0,dog,True,4,A\ne.wav,3,5,cat,True,5,A\n")
ESC_MAP = "source_label,target_label\nDog,dog\nBark,dog\nCat,cat\nRain,rain\n"


def test_single_label_accuracy_through_a_label_map(tmp_path):
    truth = load_truth(write_csv(tmp_path, "esc50.csv", ESC_TRUTH))
    label_map = load_label_map(write_csv(tmp_path, "map.csv", ESC_MAP))
    report = evaluate(clips_table(ESC_ROWS, MODEL), truth, label_map=label_map)
    assert report["mode"] == "single"
    # a and c right; b wrong; d unmapped and e missing both stay in the denominator: 2 / 5.
    assert report["correct"] == 2 and report["accuracy"] == pytest.approx(0.4)
    assert report["evaluated"] == 5 and report["matched"] == 4
    assert report["missing_predictions"] == {"count": 1, "files": ["e.wav"]}
    assert report["unmapped_predictions"] == {"count": 1, "files": ["d.wav"]}
    assert report["unmatched_prediction_rows"]["count"] == 1
    classes = by_label(report)
    assert (classes["dog"]["support"], classes["dog"]["predicted"], classes["dog"]["true_positives"]) == (2, 2, 1)
    assert classes["dog"]["precision"] == 0.5 and classes["dog"]["recall"] == 0.5
    assert classes["cat"]["precision"] is None and classes["cat"]["recall"] == 0.0
    assert classes["rain"]["precision"] == 1.0 and classes["rain"]["recall"] == 1.0
    # Rolled-up scores per truth row a..e (0 outside the kept labels):
    #   dog  = max(Dog, Bark): .9 .7 0 .4 0, positives a, d -> (1/1 + 2/3) / 2 = 5/6
    #   cat  = Cat:            0 .5 .2 .1 0, positives b, e -> (1/1 + 0) / 2   = 1/2
    #   rain = Rain:           0 .1 .8 0 0,  positive c     -> 1
    assert classes["dog"]["ap"] == pytest.approx(5 / 6, abs=1e-6)
    assert classes["cat"]["ap"] == pytest.approx(0.5, abs=1e-6)
    assert classes["rain"]["ap"] == pytest.approx(1.0, abs=1e-6)
    assert report["mAP"] == pytest.approx((5 / 6 + 0.5 + 1) / 3, abs=1e-6)
    assert {(c["truth"], c["predicted"]): c["count"] for c in report["top_confusions"]} == {
        ("cat", "dog"): 1, ("dog", "<unmapped>"): 1, ("cat", "<no prediction>"): 1}


def test_single_label_without_a_map_compares_model_names(tmp_path):
    truth = load_truth(write_csv(tmp_path, "t.csv", "filename,category\na.wav,Bark\nb.wav,Cat\nd.wav,Speech\n"))
    report = evaluate(clips_table(ESC_ROWS, MODEL), truth)
    # a Bark right, b Dog wrong, d Speech right.
    assert report["correct"] == 2 and report["accuracy"] == pytest.approx(2 / 3)


def test_truth_classes_the_table_never_names_are_unknown_without_model_not_impossible(tmp_path):
    truth = load_truth(write_csv(tmp_path, "t.csv", "filename,category\na.wav,Bark\nb.wav,Siren\n"))
    # Without --model only the classes in the table are known: Siren may be a class of the
    # checkpoint that never made a top-k.
    notes = evaluate(clips_table(ESC_ROWS, MODEL), truth)["notes"]
    assert not [n for n in notes if "never be predicted" in n]
    assert [n for n in notes if "appear in no clip's labels" in n and "without --model" in n and "Siren" in n]
    # With --model the checkpoint's classes are known: Siren is not one of them.
    notes = evaluate(clips_table(ESC_ROWS, MODEL), truth, model_labels=MODEL)["notes"]
    assert [n for n in notes if "not in the model classes and can never be predicted: ['Siren']" in n]


def test_fold_filter(tmp_path):
    truth = load_truth(write_csv(tmp_path, "esc50.csv", ESC_TRUTH), folds=[2])
    assert list(truth.labels) == ["c.wav", "d.wav"]
    label_map = load_label_map(write_csv(tmp_path, "map.csv", ESC_MAP))
    report = evaluate(clips_table(ESC_ROWS, MODEL), truth, label_map=label_map)
    assert report["accuracy"] == pytest.approx(0.5)        # c right, d unmapped
    assert report["unmatched_prediction_rows"]["count"] == 3  # a, b, zzz are outside fold 2


def test_target_only_truth_compares_class_indices(tmp_path):
    truth = load_truth(write_csv(tmp_path, "t.csv", "filename,target\na.wav,4\nb.wav,1\nc.wav,2\n"))
    report = evaluate(clips_table(ESC_ROWS, MODEL), truth)
    assert report["classes_compared_by"] == "index"
    assert report["correct"] == 2                          # a -> 4 (Bark), c -> 2 (Rain); b -> 0 not 1
    assert {(c["truth"], c["predicted"]) for c in report["top_confusions"]} == {("1", "0")}


def test_scores_column_is_used_when_present(tmp_path):
    labels = ["a", "b", "c"]
    rows = [
        ("/x/f1.wav", [], [0.2, 0.7, 0.1]),            # thresholds kept nothing; argmax b; truth b
        ("/x/f2.wav", [("a", 0.5)], [0.5, 0.3, 0.2]),  # a; truth b
        ("/x/f3.wav", [("c", 0.6)], [0.1, 0.2, 0.6]),  # c; truth c
    ]
    truth = load_truth(write_csv(tmp_path, "t.csv", "filename,category\nf1.wav,b\nf2.wav,b\nf3.wav,c\n"))
    # b never appears among the kept labels, so only the checkpoint's id2label (--model) names class 1.
    unnamed = evaluate(clips_table(rows, labels, with_scores=True), truth)
    assert any("no name" in note for note in unnamed["notes"])
    assert unnamed["accuracy"] == pytest.approx(1 / 3)     # f1's argmax is the unnamed class 1
    with_scores = evaluate(clips_table(rows, labels, with_scores=True), truth, model_labels=labels)
    assert with_scores["score_source"].startswith("scores column")
    assert with_scores["accuracy"] == pytest.approx(2 / 3)
    # class b: f1 .7 (pos), f2 .3 (pos), f3 .2 -> 1/1, 2/2 -> AP 1; class c: f3 top -> 1.
    assert by_label(with_scores)["b"]["ap"] == pytest.approx(1.0)
    assert with_scores["mAP"] == pytest.approx(1.0)
    # The same table without the column: f1 has no label (wrong), b scores 0 on f1 and f2 -> AP 0.
    without = evaluate(clips_table([r[:2] for r in rows], labels), truth)
    assert without["accuracy"] == pytest.approx(1 / 3)
    assert without["no_label_predictions"] == {"count": 1, "files": ["f1.wav"]}
    assert by_label(without)["b"]["ap"] == 0.0
    assert without["mAP"] == pytest.approx(0.5)


# --- multi label -------------------------------------------------------------------------------------------
MULTI_MODEL = ["Male speech, man speaking", "Dog", "Music", "Rain"]
MULTI_ROWS = [  # top-2 kept per clip
    ("/as/clip1.wav", [("Dog", 0.8), ("Music", 0.6)]),
    ("/as/clip2.wav", [("Music", 0.9), ("Male speech, man speaking", 0.7)]),
    ("/as/clip3.wav", [("Male speech, man speaking", 0.6), ("Dog", 0.5)]),
    ("/as/clip4.wav", [("Music", 0.6), ("Rain", 0.5)]),
]
# Row order matters for the tie: clip4 (a Music positive) is listed before clip1 (a Music negative).
MULTI_TRUTH = ("filename,positive_labels\n"
               "clip2.wav,\"Music;Male speech, man speaking\"\n"
               "clip4.wav,Music\n"
               "clip1.wav,Dog\n"
               "clip3.wav,Dog;Rain\n"
               "clip5.wav,Rain\n")


def test_multi_label_map_by_hand(tmp_path):
    truth = load_truth(write_csv(tmp_path, "as.csv", MULTI_TRUTH))
    assert truth.labels["clip2.wav"] == ["Music", "Male speech, man speaking"]
    report = evaluate(clips_table(MULTI_ROWS, MULTI_MODEL), truth)
    assert report["mode"] == "multi"
    classes = by_label(report)
    # Scores over truth rows clip2, clip4, clip1, clip3, clip5 (0 outside the kept top-2):
    #   Dog:   0  0  .8 .5 0   positives clip1, clip3 -> 1/1, 2/2        -> 1
    #   Music: .9 .6 .6 0  0   positives clip2, clip4 -> 1/1, then clip4 ties clip1 at .6: 2/3 -> 5/6
    #   Male:  .7 0  0  .6 0   positive clip2         -> 1
    #   Rain:  0  .5 0  0  0   positives clip3, clip5 both scored 0      -> 0
    assert classes["Dog"]["ap"] == pytest.approx(1.0)
    assert classes["Music"]["ap"] == pytest.approx(5 / 6, abs=1e-6)
    assert classes["Male speech, man speaking"]["ap"] == pytest.approx(1.0)
    assert classes["Rain"]["ap"] == 0.0
    assert report["mAP"] == pytest.approx((1 + 5 / 6 + 1 + 0) / 4, abs=1e-6)
    assert report["mAP_classes"] == 4
    # Kept labels as the decision: Music predicted on clip1, clip2, clip4 (2 right).
    assert (classes["Music"]["precision"], classes["Music"]["recall"]) == (pytest.approx(2 / 3), 1.0)
    assert (classes["Rain"]["predicted"], classes["Rain"]["true_positives"], classes["Rain"]["recall"]) == (1, 0, 0.0)
    assert classes["Male speech, man speaking"]["precision"] == 0.5
    assert report["missing_predictions"]["files"] == ["clip5.wav"]
    assert {(c["truth"], c["predicted"]): c["count"] for c in report["top_confusions"]} == {
        ("Rain", "Male speech, man speaking"): 1, ("Rain", "<no prediction>"): 1}


def test_multi_label_roll_up_keeps_unmapped_rows_in_the_average(tmp_path):
    truth = load_truth(write_csv(tmp_path, "as.csv", "filename,positive_labels\nclip1.wav,animal\nclip2.wav,animal\n"))
    label_map = load_label_map(write_csv(tmp_path, "map.csv", "source_label,target_label\nDog,animal\n"))
    report = evaluate(clips_table(MULTI_ROWS, MULTI_MODEL), truth, label_map=label_map)
    # clip2's kept labels (Music, Male speech) map to nothing: animal scores .8 on clip1 and 0 on clip2.
    assert report["unmapped_predictions"]["files"] == ["clip2.wav"]
    assert by_label(report)["animal"]["ap"] == pytest.approx(0.5)
    assert by_label(report)["animal"]["recall"] == pytest.approx(0.5)


# --- matching, CLI and errors ------------------------------------------------------------------------------
def test_match_keys():
    assert match_keys("gs://b/x/1-100-A-0.wav", "filename") == ["1-100-A-0.wav"]
    assert "--PJHxphWEs" in match_keys("/a/Y--PJHxphWEs.wav", "YTID")
    assert "--PJHxphWEs" in match_keys("/a/--PJHxphWEs_30.000.flac", "YTID")
    assert "--PJHxphWEs" in match_keys("/a/--PJHxphWEs.wav", "YTID")
    assert "--PJHxphWEs" not in match_keys("/a/--PJHxphWEsX.wav", "YTID")


def test_cli_audioset_csv_with_mids(tmp_path, capsys):
    labels = ["Speech", "Dog"]
    run_dir = tmp_path / "out" / "run1" / "clips"
    run_dir.mkdir(parents=True)
    pq.write_table(clips_table([("/a/Y--PJHxphWEs.wav", [("Speech", 0.9), ("Dog", 0.2)]),
                                ("/a/0aBcDeFgHiJ_10.000.wav", [("Dog", 0.7)])], labels), run_dir / "part-0.parquet")
    truth = write_csv(tmp_path, "eval_segments.csv",
                      "# Segments csv created Sun Mar  5 10:54:31 2017\n"
                      "# num_ytids=2, num_segs=2, num_unique_labels=2, num_positive_labels=3\n"
                      "# YTID, start_seconds, end_seconds, positive_labels\n"
                      "--PJHxphWEs, 30.000, 40.000, \"/m/09x0r,/m/0bt9lr\"\n"
                      "0aBcDeFgHiJ, 10.000, 20.000, \"/m/0bt9lr\"\n")
    mids = write_csv(tmp_path, "class_labels_indices.csv",
                     "index,mid,display_name\n0,/m/09x0r,\"Speech\"\n1,/m/0bt9lr,\"Dog\"\n")
    out = tmp_path / "report.json"
    assert main(["--predictions", str(tmp_path / "out" / "run1"), "--truth", truth, "--class_labels", mids,
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    # Speech: one positive, top -> 1. Dog: .2 (pos, clip 1) and .7 (pos, clip 2) -> 1/1, 2/2 -> 1.
    assert report["matched"] == 2 and report["mAP"] == pytest.approx(1.0)
    assert "mAP: 100.00%" in capsys.readouterr().out
    # Without the MID table the CSV cannot be read, and the CLI says so in one line.
    assert main(["--predictions", str(run_dir), "--truth", truth]) == 2
    assert "--class_labels" in capsys.readouterr().err


def test_errors_are_reported_not_guessed(tmp_path):
    truth = load_truth(write_csv(tmp_path, "t.csv", "filename,category\na.wav,dog\n"))
    twice = clips_table([("/run1/a.wav", [("Dog", 0.9)]), ("/run2/a.wav", [("Dog", 0.8)])], MODEL)
    with pytest.raises(EvaluationError, match="two clips rows match"):
        evaluate(twice, truth)
    many = load_label_map(write_csv(tmp_path, "m.csv", "source_label,target_label\nDog,dog\nDog,animal\n"))
    with pytest.raises(EvaluationError, match="one target"):
        evaluate(clips_table(ESC_ROWS, MODEL), truth, label_map=many)
    multi = load_truth(write_csv(tmp_path, "m.csv", "filename,positive_labels\na.wav,Dog\n"))
    with pytest.raises(EvaluationError, match="--mode multi"):
        evaluate(clips_table(ESC_ROWS, MODEL), multi, mode="single")
    with pytest.raises(EvaluationError, match="appears twice"):
        load_truth(write_csv(tmp_path, "d.csv", "filename,category\na.wav,dog\na.wav,cat\n"))
    with pytest.raises(EvaluationError, match="another checkpoint"):
        evaluate(clips_table(ESC_ROWS, MODEL), truth, model_labels=["Cat", "Dog", "Rain", "Speech", "Bark"])


def test_table_labelled_through_a_map_is_named_by_the_map(tmp_path):
    from pipeline.evaluate import model_labels_from_checkpoint

    # A table written with --label_map and --emit_scores: classes are the map's targets, in order.
    map_path = write_csv(tmp_path, "map.csv", "source_label,target_label\nDog,animal\nRain,weather\n")
    targets = model_labels_from_checkpoint(map_path)
    assert targets == ["animal", "weather"]
    rows = [("/x/1.wav", [("animal", 0.9)], [0.9, 0.4]),    # weather never kept, but scored
            ("/x/2.wav", [("animal", 0.6)], [0.6, 0.7])]
    truth = load_truth(write_csv(tmp_path, "t.csv", "filename,positive_labels\n1.wav,animal\n2.wav,weather\n"))
    report = evaluate(clips_table(rows, targets, with_scores=True), truth, model_labels=targets)
    # weather: 2.wav .7 (pos), 1.wav .4 -> 1. animal: 1.wav .9 (pos) -> 1.
    assert by_label(report)["weather"]["ap"] == pytest.approx(1.0)
    assert report["mAP"] == pytest.approx(1.0)
    assert by_label(report)["weather"]["recall"] == 0.0   # never among the kept labels
