"""Turn model logits into scores and ranked labels. Beam-free."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

ACTIVATIONS = ("sigmoid", "softmax")


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Scores from logits along the last axis.

    sigmoid: independent per class, for multi-label checkpoints (AudioSet).
    softmax: one distribution over classes, for single-label ones (ESC-50).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if activation == "sigmoid":
        # Written with exp(-|x|) so large logits of either sign cannot overflow.
        e = np.exp(-np.abs(logits))
        scores = np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    elif activation == "softmax":
        shifted = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(shifted)
        scores = e / e.sum(axis=-1, keepdims=True)
    else:
        raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATIONS}")
    return scores.astype(np.float32)


def top_k(scores: np.ndarray, labels: list[str], k: int) -> list[dict]:
    """The k best classes of one score vector, best first; ties keep class order."""
    k = min(k, len(scores))
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"label": labels[i], "index": int(i), "score": float(scores[i])} for i in order]


# ---------------------------------------------------------------------------------------------------------
# Label selection: top-k and thresholds
# ---------------------------------------------------------------------------------------------------------
def _check_unit_interval(value: float, what: str) -> None:
    if not (np.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")


def select_labels(scores: np.ndarray, labels: list[str], top_k: int | None = None,
                  threshold: float | None = None,
                  class_thresholds: np.ndarray | None = None) -> list[dict]:
    """The labels of one score vector that pass the selection, best first.

    Combination rule: class ``c`` is kept when BOTH hold

    * ``top_k`` is None, or ``c`` is among the ``top_k`` best classes (ties keep class order, as
      :func:`top_k` does), and
    * ``score[c] >= t[c]``, where ``t[c]`` is ``class_thresholds[c]`` when that array is given and
      its entry is not NaN, else ``threshold`` when set, else no threshold applies to ``c``.

    So the top-k cut is taken first over all classes and the thresholds then remove entries from it;
    a class below its threshold never lets the (k+1)-th class move up. With neither top_k nor any
    threshold every class is returned, best first. Scores and thresholds are compared as float32,
    the precision the tables store scores at, so a threshold written as 0.7 keeps a stored 0.7.
    The result may be empty.
    """
    _check_top_k(top_k)
    return select_with_limits(scores, labels, top_k, threshold_limits(labels, threshold, class_thresholds))


def _check_top_k(top_k: int | None) -> None:
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")


def threshold_limits(labels: list[str], threshold: float | None = None,
                     class_thresholds: np.ndarray | None = None) -> np.ndarray:
    """Checked per-class thresholds as float32 (NaN: no threshold), as :func:`select_labels` applies them."""
    if threshold is not None:
        _check_unit_interval(threshold, "threshold")
    n = len(labels)
    limit = np.full(n, np.nan, dtype=np.float32)
    if threshold is not None:
        limit[:] = np.float32(threshold)
    if class_thresholds is not None:
        per_class = np.asarray(class_thresholds, dtype=np.float64)
        if per_class.shape != (n,):
            raise ValueError(f"class_thresholds has shape {per_class.shape}, expected ({n},)")
        given = ~np.isnan(per_class)
        bad = given & ~((per_class >= 0.0) & (per_class <= 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"class threshold for {labels[i]!r} must be in [0, 1], got {per_class[i]!r}")
        limit[given] = per_class[given].astype(np.float32)
    return limit


def select_with_limits(scores: np.ndarray, labels: list[str], top_k: int | None,
                       limit: np.ndarray) -> list[dict]:
    """The core of :func:`select_labels`, with top_k and thresholds already checked."""
    scores = np.asarray(scores)
    if scores.ndim != 1 or scores.shape[0] != len(labels):
        raise ValueError(f"scores has shape {scores.shape}, expected ({len(labels)},) for {len(labels)} labels")
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:int(top_k)]
    s32 = scores.astype(np.float32)
    return [{"label": labels[i], "index": int(i), "score": float(scores[i])}
            for i in order if np.isnan(limit[i]) or s32[i] >= limit[i]]


def _open_text(path_or_url: str):
    import fsspec

    return fsspec.open(path_or_url, "r", encoding="utf-8-sig", newline="")


def _read_csv_rows(path_or_url: str, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a headed CSV; blank lines and lines starting with '#' are skipped."""
    import csv

    with _open_text(path_or_url) as f:
        lines = [(no, line) for no, line in enumerate(f.read().splitlines(), start=1)
                 if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{path_or_url}: empty CSV; expected a header with columns {', '.join(required)}")
    reader = csv.reader([line for _, line in lines], skipinitialspace=True)
    rows = list(reader)
    header = [h.strip() for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path_or_url}: header {header} lacks column(s) {', '.join(missing)}")
    out = []
    for (no, _), values in zip(lines[1:], rows[1:]):
        if len(values) != len(header):
            raise ValueError(f"{path_or_url}, line {no}: {len(values)} fields, header has {len(header)} "
                             "(quote label names that contain commas)")
        out.append((no, {h: v.strip() for h, v in zip(header, values)}))
    return out


def _unknown_names_error(path: str, unknown: list[str], known: list[str], what: str) -> ValueError:
    import difflib

    hints = []
    for name in unknown[:5]:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    return ValueError(f"{path}: {len(unknown)} {what} not among the {len(known)} available labels: "
                      + ", ".join(hints) + more)


def load_class_thresholds(csv_path_or_url: str, labels: list[str]) -> np.ndarray:
    """Per-class thresholds from a CSV with columns ``label,threshold`` (a header row; any fsspec URL).

    Returns a float64 array aligned with ``labels``. Classes the file does not list are NaN, which
    :func:`select_labels` reads as "use the global threshold, or none when that is unset" (the same
    as 0 for sigmoid and softmax scores). Label names must match the checkpoint's id2label exactly
    (quote names that contain commas); an unknown name, a repeated name or a threshold outside [0, 1]
    is an error naming the line.
    """
    index = {name: i for i, name in enumerate(labels)}
    out = np.full(len(labels), np.nan)
    seen: dict[str, int] = {}
    unknown = []
    for no, row in _read_csv_rows(csv_path_or_url, ("label", "threshold")):
        name = row["label"]
        if name not in index:
            unknown.append(name)
            continue
        if name in seen:
            raise ValueError(f"{csv_path_or_url}, line {no}: label {name!r} already given on line {seen[name]}")
        seen[name] = no
        try:
            value = float(row["threshold"])
        except ValueError:
            raise ValueError(f"{csv_path_or_url}, line {no}: threshold {row['threshold']!r} is not a number") from None
        if not (np.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"{csv_path_or_url}, line {no}: threshold {value!r} for {name!r} is not in [0, 1]")
        out[index[name]] = value
    if unknown:
        raise _unknown_names_error(csv_path_or_url, unknown, labels, "label name(s)")
    return out


# ---------------------------------------------------------------------------------------------------------
# Label maps: rename or roll model classes up into a target vocabulary
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelMap:
    """(source_label, target_label) pairs; a source may feed several targets and a target may
    collect several sources. ``targets`` keeps the order in which targets first appear in the file."""
    pairs: tuple[tuple[str, str], ...]

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(t for _, t in self.pairs))

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.pairs))

    def targets_of(self, source: str) -> list[str]:
        return [t for s, t in self.pairs if s == source]

    def sources_of(self, target: str) -> list[str]:
        return [s for s, t in self.pairs if t == target]

    def is_many_to_one(self) -> bool:
        """Every source has exactly one target (a plain renaming / grouping)."""
        return len(self.sources) == len(self.pairs)


def load_label_map(path: str) -> LabelMap:
    """A label map from a CSV with columns ``source_label,target_label`` (a header row; any fsspec URL).

    Repeated identical pairs are kept once; empty names are an error naming the line.
    """
    pairs: dict[tuple[str, str], None] = {}
    for no, row in _read_csv_rows(path, ("source_label", "target_label")):
        source, target = row["source_label"], row["target_label"]
        if not source or not target:
            raise ValueError(f"{path}, line {no}: empty source_label or target_label")
        pairs[(source, target)] = None
    if not pairs:
        raise ValueError(f"{path}: the label map has no rows")
    return LabelMap(tuple(pairs))


def roll_up(scores: np.ndarray, labels: list[str], label_map: LabelMap,
            strict: bool = True) -> tuple[np.ndarray, list[str]]:
    """Scores in the map's target vocabulary: a target's score is the max of its sources' scores.

    ``scores`` has the model's classes on its last axis (one clip or a batch). The result's last
    axis follows ``label_map.targets``. Model classes that the map does not mention are dropped from
    this view: they raise no target's score. With ``strict`` a map source that is not one of
    ``labels`` is an error (a typo would otherwise silently give its target nothing); without it such
    sources are ignored and a target none of whose sources is present scores 0.
    """
    scores = np.asarray(scores)
    if scores.shape[-1] != len(labels):
        raise ValueError(f"scores has {scores.shape[-1]} classes on its last axis, labels has {len(labels)}")
    return apply_roll_up(scores, roll_up_plan(labels, label_map, strict)), label_map.targets


@dataclass(frozen=True)
class RollUpPlan:
    """Which model columns feed which target, worked out once per (labels, map)."""
    num_targets: int
    present: list[int]       # targets with at least one source among the model's classes
    flat: np.ndarray         # source columns, grouped by target in ``present`` order
    starts: np.ndarray       # where each present target's group starts in ``flat``


def roll_up_plan(labels: list[str], label_map: LabelMap, strict: bool = True) -> RollUpPlan:
    index = {name: i for i, name in enumerate(labels)}
    if strict:
        unknown = [s for s in label_map.sources if s not in index]
        if unknown:
            raise _unknown_names_error("label map", unknown, labels, "source label(s)")
    targets = label_map.targets
    position = {t: j for j, t in enumerate(targets)}
    columns: list[list[int]] = [[] for _ in targets]
    for source, target in label_map.pairs:
        if source in index:
            columns[position[target]].append(index[source])
    present = [j for j, cols in enumerate(columns) if cols]
    flat = np.concatenate([columns[j] for j in present]) if present else np.zeros(0, np.int64)
    starts = np.cumsum([0] + [len(columns[j]) for j in present[:-1]]) if present else np.zeros(0, np.int64)
    return RollUpPlan(len(targets), present, flat, starts)


def apply_roll_up(scores: np.ndarray, plan: RollUpPlan) -> np.ndarray:
    out = np.zeros(scores.shape[:-1] + (plan.num_targets,), dtype=scores.dtype)
    if plan.present:
        out[..., plan.present] = np.maximum.reduceat(scores[..., plan.flat], plan.starts, axis=-1)
    return out


@dataclass(frozen=True, eq=False)
class LabelSelection:
    """Everything that turns one clip's model scores into its ``labels`` list; picklable for workers.

    Build it once on the launcher with :meth:`load` (so a bad file fails the run before it starts),
    then call :meth:`select` per clip. With a label map the scores are rolled up first and the
    labels, their ``index`` and ``class_thresholds`` are in the map's target vocabulary
    (``output_labels``); without one they are the model's own classes.
    """
    model_labels: tuple[str, ...]
    top_k: int | None = 5
    threshold: float | None = None
    class_thresholds: np.ndarray | None = None
    label_map: LabelMap | None = None

    @functools.cached_property
    def output_labels(self) -> list[str]:
        return self.label_map.targets if self.label_map is not None else list(self.model_labels)

    @classmethod
    def load(cls, model_labels: list[str], top_k: int | None = 5, threshold: float | None = None,
             class_thresholds_path: str | None = None, label_map_path: str | None = None) -> "LabelSelection":
        """Reads and checks the files; raises ValueError (or OSError) with a message fit for the user."""
        label_map = load_label_map(label_map_path) if label_map_path else None
        if label_map is not None:
            roll_up(np.zeros(len(model_labels), np.float32), list(model_labels), label_map)  # strict: names exist
        out_labels = label_map.targets if label_map is not None else list(model_labels)
        per_class = load_class_thresholds(class_thresholds_path, out_labels) if class_thresholds_path else None
        selection = cls(tuple(model_labels), top_k, threshold, per_class, label_map)
        _check_top_k(top_k)
        selection.select(np.zeros(len(model_labels), np.float32))  # validates the thresholds now
        return selection

    # Worked out on first use and kept (also across pickling to workers): select() runs once per
    # clip and per window, so name lookups and threshold checks must not be repeated there.
    @functools.cached_property
    def _plan(self) -> RollUpPlan | None:
        return roll_up_plan(list(self.model_labels), self.label_map) if self.label_map is not None else None

    @functools.cached_property
    def _limits(self) -> np.ndarray:
        return threshold_limits(self.output_labels, self.threshold, self.class_thresholds)

    def output_scores(self, scores: np.ndarray) -> np.ndarray:
        """The score vector in ``output_labels`` order (rolled up when there is a label map)."""
        scores = np.asarray(scores)
        if self._plan is None:
            return scores
        if scores.shape[-1] != len(self.model_labels):
            raise ValueError(f"scores has {scores.shape[-1]} classes on its last axis, the model has "
                             f"{len(self.model_labels)}")
        return apply_roll_up(scores, self._plan)

    def select(self, scores: np.ndarray) -> list[dict]:
        return select_with_limits(self.output_scores(scores), self.output_labels, self.top_k, self._limits)
