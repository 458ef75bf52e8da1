"""Score a clips table against ground truth: single-label accuracy or multi-label mAP. Beam-free.

    python -m pipeline.evaluate --predictions <clips dir | run dir | .parquet> --truth <csv>
        [--label_map map.csv] [--mode single|multi] [--model <checkpoint dir>]
        [--class_labels class_labels_indices.csv] [--fold 1 --fold 2] [--output report.json]
    python -m pipeline.evaluate --iceberg_catalog NAME [--iceberg_namespace NS] [--run_id ID]
        [--iceberg_output ROOT] --truth <csv> ...

The predictions come from a Parquet path or from the Iceberg clips table runs were committed to
(``--iceberg_catalog``; ``--iceberg_output`` names the local output root of an unconfigured, embedded
catalog): one run's rows with ``--run_id``, otherwise the archive's current labels, the latest row
per clip over all runs (pipeline/lakehouse/iceberg_read.py).

Ground truth (a CSV with a header row; lines starting with '#' are skipped, except an AudioSet
header written as ``# YTID, start_seconds, end_seconds, positive_labels``):

* single-label, ESC-50 style: ``filename`` plus ``category`` (class name) and/or ``target`` (class
  index), optional ``fold``. With ``category`` classes are compared by name; with only ``target``
  they are compared by the model's class index, which then must follow the dataset's target order.
* multi-label, AudioSet style: ``filename`` or ``YTID`` plus ``positive_labels``: the clip's label
  names separated by ';' (or by ',' when the field holds no ';'; AudioSet names such as
  "Male speech, man speaking" contain commas, so write those lists with ';'). AudioSet's own
  segment CSVs list MIDs (/m/09x0r); pass ``--class_labels class_labels_indices.csv`` (columns mid,
  display_name) to translate them to names.

Matching: a clips row belongs to a truth row when the basename of its ``source_uri`` equals the
basename of ``filename``; with ``YTID`` the file stem must be the YTID, 'Y' + YTID, or the YTID
followed by '_' (e.g. ``<YTID>_30.000.wav``). Two clips rows matching the same truth row is an error.

What counts (nothing is ever dropped from a denominator):

* Every truth row is evaluated. One with no clips row is wrong and listed under
  ``missing_predictions`` (it scores 0 for every class).
* With ``--label_map`` the model's classes are rolled up to the map's targets (a target scores the
  max of its sources). In single mode the prediction is the model's top-1 class mapped through the
  map (the map must send each source to one target); a top-1 class the map does not mention is
  wrong and listed under ``unmapped_predictions``. In multi mode a row none of whose labels map to
  a target predicts nothing (listed there too) and keeps its place in every average.
* Clips rows that match no truth row are not scored; their count is reported.

Scores: when the clips table has a ``scores`` column (one float per model class, index order,
written by --emit_scores) AP uses it and the single-label prediction is its argmax. Otherwise only
the labels the pipeline kept (top-k / thresholds) have scores and every other class counts as 0 for
that clip; this is a limitation: a positive outside a clip's kept labels adds precision 0, so mAP
from a top-k table is usually below the full-score mAP.

AP of a class: the mean, over its positive clips, of the precision at that clip's score (the
fraction of positives among all clips scoring at least as much; tied clips share one precision);
positives scoring exactly 0 contribute 0. Without zero scores this is the usual AP
(sklearn.metrics.average_precision_score). mAP is the mean AP over classes with at least one
positive among the evaluated truth rows. Per-class precision and recall use the decision the
pipeline made: the top-1 class in single mode, the kept labels in multi mode.
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa

from pipeline.lakehouse.iceberg_source import (add_iceberg_source_arguments, check_iceberg_source_arguments,
                                     open_source_catalog)
from pipeline.runs.table_files import read_parquet_path
from transforms.scoring.labels import LabelMap, load_label_map, roll_up
from transforms.io.hub_models import download_snapshot, parse_hub_model
from transforms.io.checkpoint import CONFIG_FILE

MISSING = "<no prediction>"
UNMAPPED = "<unmapped>"
NO_LABEL = "<no label>"
MODES = ("single", "multi")
LIST_LIMIT = 50  # file names listed per category in the report; the counts are always complete


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated; the message says which and why."""


# ---------------------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Truth:
    key_column: str            # "filename" or "YTID"
    by_index: bool             # classes are compared by model index (target-only CSV)
    labels: dict[str, list[str]]  # match key -> positive class names (one in single-label CSVs)
    single_label: bool         # the CSV was single-label (category / target)


def _truth_lines(path: str) -> list[str]:
    with fsspec.open(path, "r", encoding="utf-8-sig", newline="") as f:
        raw = f.read().splitlines()
    lines = []
    for line in raw:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            # AudioSet segment CSVs comment out their header; keep it as the header.
            body = stripped.lstrip("#").strip()
            if not lines and body.replace(" ", "").startswith("YTID,"):
                lines.append(body)
            continue
        lines.append(line)
    return lines


def _split_labels(field_value: str) -> list[str]:
    sep = ";" if ";" in field_value else ","
    return [t.strip().strip('"').strip() for t in field_value.split(sep) if t.strip().strip('"').strip()]


def load_mid_names(path: str) -> dict[str, str]:
    """mid -> display_name from AudioSet's class_labels_indices.csv (columns index, mid, display_name)."""
    rows = list(csv.DictReader(_truth_lines(path), skipinitialspace=True))
    if not rows or "mid" not in rows[0] or "display_name" not in rows[0]:
        raise EvaluationError(f"{path}: expected columns mid and display_name")
    return {r["mid"].strip(): r["display_name"].strip() for r in rows}


def _looks_like_mid(token: str) -> bool:
    return token.startswith(("/m/", "/g/", "/t/"))


def load_truth(path: str, folds: list[int] | None = None, mid_names: dict[str, str] | None = None) -> Truth:
    lines = _truth_lines(path)
    if not lines:
        raise EvaluationError(f"{path}: empty ground-truth CSV")
    reader = csv.DictReader(lines, skipinitialspace=True)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    key_column = "filename" if "filename" in header else "YTID" if "YTID" in header else None
    if key_column is None:
        raise EvaluationError(f"{path}: needs a 'filename' (or AudioSet 'YTID') column; header is {header}")
    if "positive_labels" in header:
        label_column, single = "positive_labels", False
    elif "category" in header:
        label_column, single = "category", True
    elif "target" in header:
        label_column, single = "target", True
    else:
        raise EvaluationError(f"{path}: needs 'category' and/or 'target' (single-label) or 'positive_labels' "
                              f"(multi-label); header is {header}")
    if folds and "fold" not in header:
        raise EvaluationError(f"{path}: --fold given but the CSV has no 'fold' column")
    labels: dict[str, list[str]] = {}
    lines_of: dict[str, int] = {}
    for no, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise EvaluationError(f"{path}, data row {no - 1}: field count differs from the header "
                                  "(quote fields that contain commas)")
        if folds:
            try:
                if int(row["fold"]) not in folds:
                    continue
            except ValueError:
                raise EvaluationError(f"{path}, data row {no - 1}: fold {row['fold']!r} is not an integer") from None
        key = row[key_column].strip()
        if key_column == "filename":
            key = os.path.basename(key)
        if not key:
            raise EvaluationError(f"{path}, data row {no - 1}: empty {key_column}")
        if key in labels:
            raise EvaluationError(f"{path}: {key_column} {key!r} appears twice (data rows {lines_of[key]} and {no - 1})")
        value = row[label_column].strip()
        if label_column == "target":
            try:
                names = [str(int(value))]
            except ValueError:
                raise EvaluationError(f"{path}, data row {no - 1}: target {value!r} is not an integer") from None
        elif single:
            names = [value] if value else []
        else:
            names = _split_labels(value)
            if mid_names is not None:
                unknown = [t for t in names if _looks_like_mid(t) and t not in mid_names]
                if unknown:
                    raise EvaluationError(f"{path}, data row {no - 1}: MID(s) {unknown} not in --class_labels")
                names = [mid_names.get(t, t) for t in names]
            elif any(_looks_like_mid(t) for t in names):
                raise EvaluationError(f"{path}: positive_labels holds AudioSet MIDs such as {names[0]!r}; pass "
                                      "--class_labels class_labels_indices.csv to translate them to names")
        if not names:
            raise EvaluationError(f"{path}, data row {no - 1}: no label given")
        labels[key] = list(dict.fromkeys(names))
        lines_of[key] = no - 1
    if not labels:
        raise EvaluationError(f"{path}: no ground-truth rows" + (f" in fold(s) {folds}" if folds else ""))
    return Truth(key_column=key_column, by_index=label_column == "target", labels=labels, single_label=single)


def match_keys(source_uri: str, key_column: str) -> list[str]:
    """The truth keys a clips row with this source_uri may match."""
    base = source_uri.rstrip("/").rsplit("/", 1)[-1]
    if key_column == "filename":
        return [base]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    keys = [stem]
    if stem.startswith("Y") and len(stem) >= 12:
        keys.append(stem[1:])
    for k in list(keys):
        if len(k) > 11 and k[11] == "_":
            keys.append(k[:11])
    return list(dict.fromkeys(keys))


# ---------------------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------------------
def model_labels_from_checkpoint(path: str) -> list[str]:
    """Class names in index order: from a checkpoint directory's config.json (or that file itself, or a
    Hugging Face model id's), or,
    for a table labelled with --label_map, from that map's CSV (its targets, in order)."""
    if path.lower().endswith(".csv"):
        return load_label_map(path).targets
    hub_model = parse_hub_model(path)
    if hub_model is not None:   # a Hugging Face model id, as run_pipeline.py --model takes it
        path, _ = download_snapshot(hub_model, files=(CONFIG_FILE,))   # the class names only
    fs, root = fsspec.core.url_to_fs(path)
    config_path = root if root.endswith(".json") else f"{root.rstrip('/')}/config.json"
    with fs.open(config_path, "r") as f:
        id2label = json.load(f).get("id2label")
    if not id2label:
        raise EvaluationError(f"{path}: config.json has no id2label")
    return [id2label[k] for k in sorted(id2label, key=int)]


@dataclass
class Predictions:
    """The clips rows that match truth rows, as a dense score matrix over the model's classes."""
    class_names: list[str]          # model classes (by name, or str(index) when comparing by index)
    names_complete: bool            # every model class is named (scores column or --model given)
    scores: np.ndarray              # (n_truth, n_classes), zero where unknown / missing
    top1: list[str | None]          # model-space top-1 name per truth row (None: no row or no label)
    kept: list[list[str]]           # model-space names of the labels the pipeline kept, best first
    has_row: np.ndarray             # bool per truth row
    from_scores_column: bool
    unmatched_rows: list[str] = field(default_factory=list)


def _index_names(clips: pa.Table, model_labels: list[str] | None) -> dict[int, str]:
    names: dict[int, str] = {}
    for labels in clips.column("labels").to_pylist():
        for lab in labels or []:
            i, name = int(lab["index"]), lab["label"]
            if model_labels is not None:
                if i >= len(model_labels) or model_labels[i] != name:
                    raise EvaluationError(
                        f"the clips table names class {i} {name!r} but --model says "
                        f"{model_labels[i] if i < len(model_labels) else '(no such class)'!r}: "
                        "the table was made with another checkpoint")
            elif names.setdefault(i, name) != name:
                raise EvaluationError(f"class index {i} is named both {names[i]!r} and {name!r} in the clips table")
    return names


def gather_predictions(clips: pa.Table, truth: Truth, model_labels: list[str] | None = None) -> Predictions:
    for column in ("source_uri", "labels"):
        if column not in clips.column_names:
            raise EvaluationError(f"the predictions table has no {column!r} column (is it a clips table?)")
    keys = list(truth.labels)
    position = {k: i for i, k in enumerate(keys)}
    uris = clips.column("source_uri").to_pylist()
    row_labels = clips.column("labels").to_pylist()
    score_lists = clips.column("scores").to_pylist() if "scores" in clips.column_names else [None] * len(uris)
    use_scores = any(s is not None for s in score_lists)

    index_names = _index_names(clips, None if truth.by_index else model_labels)
    if truth.by_index:
        n = max([len(s) for s in score_lists if s is not None] + [max(index_names, default=-1) + 1])
        if model_labels is not None:
            n = max(n, len(model_labels))
        class_names = [str(i) for i in range(n)]
        complete = use_scores or model_labels is not None
    elif model_labels is not None:
        class_names, complete = list(model_labels), True
    else:
        width = max([len(s) for s in score_lists if s is not None] + [max(index_names, default=-1) + 1])
        class_names = [index_names.get(i, f"<class {i}>") for i in range(width)]
        complete = len(index_names) == width
    column_of = {name: i for i, name in enumerate(class_names)}

    matched_row: dict[int, int] = {}
    unmatched = []
    for r, uri in enumerate(uris):
        hits = [position[k] for k in match_keys(uri, truth.key_column) if k in position]
        if not hits:
            unmatched.append(uri)
            continue
        t = hits[0]
        if t in matched_row:
            raise EvaluationError(f"two clips rows match ground-truth {keys[t]!r}: {uris[matched_row[t]]!r} and "
                                  f"{uri!r}; evaluate one run at a time and give files unique names")
        matched_row[t] = r

    scores = np.zeros((len(keys), len(class_names)), dtype=np.float64)
    top1: list[str | None] = [None] * len(keys)
    kept: list[list[str]] = [[] for _ in keys]
    has_row = np.zeros(len(keys), dtype=bool)
    for t, r in matched_row.items():
        has_row[t] = True
        labs = row_labels[r] or []
        name_of = (lambda lab: str(int(lab["index"]))) if truth.by_index else (lambda lab: lab["label"])
        kept[t] = [name_of(lab) for lab in labs]
        full = score_lists[r]
        if full is not None:
            if len(full) != len(class_names):
                raise EvaluationError(f"{uris[r]}: scores column has {len(full)} values, expected {len(class_names)}")
            scores[t] = np.asarray(full, dtype=np.float64)
            top1[t] = class_names[int(np.argmax(scores[t]))]
        else:
            for lab in labs:
                scores[t, column_of[name_of(lab)]] = lab["score"]
            top1[t] = kept[t][0] if kept[t] else None
    return Predictions(class_names=class_names, names_complete=complete, scores=scores, top1=top1, kept=kept,
                       has_row=has_row, from_scores_column=use_scores, unmatched_rows=unmatched)


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------
def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """AP of one class (see the module docstring); None when it has no positive."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], positive[order]
    cum_pos = np.cumsum(y)
    # Last position of each score's tie group: everything scoring >= s is "retrieved" at s.
    last = np.searchsorted(-s, -s, side="right") - 1
    precision = cum_pos[last] / (last + 1)
    return float(precision[y & (s > 0)].sum() / n_pos)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _listing(names: list[str]) -> dict:
    return {"count": len(names), "files": names[:LIST_LIMIT]}


def evaluate(clips: pa.Table, truth: Truth, mode: str | None = None, label_map: LabelMap | None = None,
             model_labels: list[str] | None = None, top_confusions: int = 20) -> dict:
    """The evaluation report as a JSON-ready dict (see the module docstring for the rules)."""
    mode = mode or ("single" if truth.single_label else "multi")
    if mode not in MODES:
        raise EvaluationError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "single" and not truth.single_label:
        raise EvaluationError("single-label evaluation needs a 'category' or 'target' column; this ground truth "
                              "has 'positive_labels' (use --mode multi)")
    if label_map is not None and truth.by_index:
        raise EvaluationError("--label_map maps class names; the ground truth has only 'target' indices "
                              "(add a 'category' column)")
    if label_map is not None and mode == "single" and not label_map.is_many_to_one():
        multi = [s for s in label_map.sources if len(label_map.targets_of(s)) > 1]
        raise EvaluationError(f"single-label evaluation needs each source label mapped to one target; "
                              f"{multi[0]!r} maps to {label_map.targets_of(multi[0])}")

    preds = gather_predictions(clips, truth, model_labels)
    keys = list(truth.labels)
    notes = []
    if label_map is not None:
        strict = preds.names_complete
        target_scores, classes = roll_up(preds.scores, preds.class_names, label_map, strict=strict)
        if not strict:
            unseen = [s for s in label_map.sources if s not in preds.class_names]
            if unseen:
                notes.append(f"{len(unseen)} label-map source(s) never appear in the clips table (they may be "
                             f"real classes that never made a top-k; pass --model to check): {unseen[:20]}")

        def to_targets(names: list[str]) -> list[str]:
            return list(dict.fromkeys(t for n in names for t in label_map.targets_of(n)))
    else:
        target_scores, classes = preds.scores, list(preds.class_names)

        def to_targets(names: list[str]) -> list[str]:
            return list(names)
    if not preds.names_complete:
        unnamed = [c for c in preds.class_names if c.startswith("<class ")]
        if unnamed:
            notes.append(f"{len(unnamed)} model classes have no name in the clips table; truth labels can only "
                         "match named classes (pass --model <checkpoint dir>)")

    # Truth classes the model (or the map) cannot produce still count: their scores are 0.
    extra = [c for c in dict.fromkeys(n for names in truth.labels.values() for n in names) if c not in classes]
    if extra:
        if label_map is not None or model_labels is not None or (preds.from_scores_column and preds.names_complete):
            notes.append(f"{len(extra)} ground-truth class(es) are not in the "
                         f"{'map targets' if label_map else 'model classes'} and can never be predicted: {extra[:20]}")
        else:
            # Without --model (or a scores column, one score per class) the classes known are those
            # the table names: a class that never made a top-k is unknown here, not impossible.
            notes.append(f"{len(extra)} ground-truth class(es) appear in no clip's labels (they score 0 here; "
                         f"whether the checkpoint has them is unknown without --model): {extra[:20]}")
        classes = classes + extra
        target_scores = np.hstack([target_scores, np.zeros((len(keys), len(extra)))])
    column = {c: j for j, c in enumerate(classes)}
    truth_matrix = np.zeros((len(keys), len(classes)), dtype=bool)
    for t, k in enumerate(keys):
        truth_matrix[t, [column[c] for c in truth.labels[k]]] = True

    missing = [k for t, k in enumerate(keys) if not preds.has_row[t]]
    no_label = [k for t, k in enumerate(keys) if preds.has_row[t] and preds.top1[t] is None]
    unmapped: list[str] = []
    predicted_sets: list[list[str]] = []
    for t, k in enumerate(keys):
        if not preds.has_row[t]:
            predicted_sets.append([MISSING])
            continue
        if mode == "single":
            if preds.top1[t] is None:
                predicted_sets.append([NO_LABEL])
                continue
            mapped = to_targets([preds.top1[t]])
            if not mapped:
                unmapped.append(k)
                predicted_sets.append([UNMAPPED])
            else:
                predicted_sets.append(mapped[:1])
        else:
            mapped = to_targets(preds.kept[t])
            if label_map is not None and preds.kept[t] and not mapped:
                unmapped.append(k)
            predicted_sets.append(mapped)

    per_class = []
    aps: dict[str, float] = {}
    tp_count: collections.Counter = collections.Counter()
    pred_count: collections.Counter = collections.Counter()
    for t, k in enumerate(keys):
        for c in predicted_sets[t]:
            if c in column:
                pred_count[c] += 1
                tp_count[c] += int(truth_matrix[t, column[c]])
    for c in sorted(classes, key=lambda c: (-int(truth_matrix[:, column[c]].sum()), c)):
        support = int(truth_matrix[:, column[c]].sum())
        if support == 0 and pred_count[c] == 0:
            continue
        ap = average_precision(target_scores[:, column[c]], truth_matrix[:, column[c]])
        if ap is not None:
            aps[c] = ap
        per_class.append({"label": c, "support": support, "predicted": pred_count[c],
                          "true_positives": tp_count[c], "precision": _ratio(tp_count[c], pred_count[c]),
                          "recall": _ratio(tp_count[c], support), "ap": ap})

    confusions: collections.Counter = collections.Counter()
    correct = 0
    for t, k in enumerate(keys):
        truth_set = set(truth.labels[k])
        predicted = predicted_sets[t]
        if mode == "single":
            if predicted[0] == truth.labels[k][0]:
                correct += 1
            else:
                confusions[(truth.labels[k][0], predicted[0])] += 1
        else:
            missed = [c for c in truth.labels[k] if c not in predicted]
            wrong = [c for c in predicted if c not in truth_set]
            for a in missed:
                for b in wrong or ["<nothing>"]:
                    confusions[(a, b)] += 1

    report = {
        "mode": mode,
        "classes_compared_by": "index" if truth.by_index else "name",
        "score_source": ("scores column (every class)" if preds.from_scores_column else
                         "labels column only: classes outside a clip's kept labels score 0"),
        "label_map_targets": len(label_map.targets) if label_map is not None else None,
        "truth_rows": len(keys),
        "evaluated": len(keys),
        "matched": int(preds.has_row.sum()),
        "missing_predictions": _listing(missing),
        "unmapped_predictions": _listing(unmapped),
        "no_label_predictions": _listing(no_label),
        "unmatched_prediction_rows": {"count": len(preds.unmatched_rows),
                                      "examples": preds.unmatched_rows[:LIST_LIMIT]},
        "mAP": float(np.mean(list(aps.values()))) if aps else None,
        "mAP_classes": len(aps),
        "per_class": per_class,
        "top_confusions": [{"truth": a, "predicted": b, "count": n}
                           for (a, b), n in confusions.most_common(top_confusions)],
        "notes": notes,
    }
    if mode == "single":
        report["correct"] = correct
        report["accuracy"] = correct / len(keys)
    else:
        report["confusions_are"] = ("pairs of a missed ground-truth label and a wrongly predicted label in the "
                                    "same clip ('<nothing>': no wrong label was predicted)")
    return report


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------
def render(report: dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f}%"

    lines = [f"mode: {report['mode']} (classes compared by {report['classes_compared_by']}; "
             f"scores from {report['score_source']})",
             f"ground-truth rows: {report['truth_rows']}, with a prediction: {report['matched']}, "
             f"missing: {report['missing_predictions']['count']}, unmapped: {report['unmapped_predictions']['count']}, "
             f"no label: {report['no_label_predictions']['count']}",
             f"clips rows matching no ground truth (not scored): {report['unmatched_prediction_rows']['count']}"]
    if report["mode"] == "single":
        lines.append(f"accuracy: {pct(report['accuracy'])} ({report['correct']}/{report['evaluated']})")
    lines.append(f"mAP: {pct(report['mAP'])} over {report['mAP_classes']} classes with positives")
    if report["top_confusions"]:
        lines.append("most frequent confusions (truth -> predicted):")
        lines += [f"  {c['truth']} -> {c['predicted']}: {c['count']}" for c in report["top_confusions"][:10]]
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions",
                        help="clips table: a .parquet file, a folder of part files, or a run folder (<output>/_runs/<run_id>)")
    add_iceberg_source_arguments(parser, source, "evaluate this run's clips; without it, the archive's current "
                                                 "labels (the latest row per clip over all runs)")
    parser.add_argument("--truth", required=True, help="ground-truth CSV (see above)")
    parser.add_argument("--label_map", default=None, help="CSV source_label,target_label")
    parser.add_argument("--mode", choices=MODES, default=None,
                        help="default: single for category/target CSVs, multi for positive_labels")
    parser.add_argument("--model", default=None,
                        help="names every class of the table: the checkpoint directory (or its config.json) "
                             "or Hugging Face model id (as run_pipeline.py --model takes it); for a table "
                             "labelled with --label_map, that map's CSV")
    parser.add_argument("--class_labels", default=None,
                        help="AudioSet class_labels_indices.csv, to read MIDs in positive_labels")
    parser.add_argument("--fold", type=int, action="append", default=None,
                        help="evaluate only these folds (repeatable; needs a 'fold' column)")
    parser.add_argument("--top_confusions", type=int, default=20)
    parser.add_argument("--output", default=None, help="write the full report here as JSON")
    return parser


def read_predictions(args: argparse.Namespace) -> pa.Table:
    """The clips table the command line names: --predictions, or the Iceberg clips table (one
    run's rows with --run_id, else the archive's current labels)."""
    if not args.iceberg_catalog:
        return read_parquet_path(args.predictions, "clips")
    from pipeline.lakehouse.iceberg_read import read_iceberg_table

    return read_iceberg_table(open_source_catalog(args), args.iceberg_namespace, "clips", args.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_iceberg_source_arguments(parser, args)
    try:
        mids = load_mid_names(args.class_labels) if args.class_labels else None
        truth = load_truth(args.truth, folds=args.fold, mid_names=mids)
        label_map = load_label_map(args.label_map) if args.label_map else None
        model_labels = model_labels_from_checkpoint(args.model) if args.model else None
        clips = read_predictions(args)
        report = evaluate(clips, truth, args.mode, label_map, model_labels, args.top_confusions)
    except (EvaluationError, ValueError, FileNotFoundError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report["inputs"] = {"predictions": args.predictions, "truth": args.truth, "label_map": args.label_map,
                        "model": args.model, "folds": args.fold}
    if args.iceberg_catalog:
        report["inputs"]["iceberg"] = {"catalog": args.iceberg_catalog, "namespace": args.iceberg_namespace,
                                       "run_id": args.run_id,
                                       "rows": "run" if args.run_id else "current labels (latest row per clip)"}
    print(render(report))
    if args.output:
        with fsspec.open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
