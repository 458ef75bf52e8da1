"""Training examples of custom classes: a CSV file read into embeddings. Beam-free.

Columns (a header row; order free):

    label      the class name (one classifier holds every label of the file)
    polarity   positive or negative (also: pos/neg, 1/0, true/false, yes/no)
    clip_id    a clip of the archive ...
    window     ... and optionally its window index (empty: the clip's mean embedding)
    audio      ... or an audio file (path or URL) ...
    start, end ... and optionally a span of it in seconds

Clip examples take the stored embedding from the index (python -m pipeline.index build first);
audio examples are embedded with the index's checkpoint (pipeline/vectors/query.py).
"""
from __future__ import annotations

import csv
import dataclasses

import fsspec
import numpy as np

POSITIVE = {"positive", "pos", "1", "true", "yes", "+"}
NEGATIVE = {"negative", "neg", "0", "false", "no", "-"}


@dataclasses.dataclass(frozen=True)
class Example:
    line: int
    label: str
    positive: bool
    clip_id: str | None = None
    window: int | None = None
    audio: str | None = None
    start: float | None = None
    end: float | None = None


def _number(value: str | None, kind, what: str, line: int):
    if value is None or not value.strip():
        return None
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"examples line {line}: {what} {value!r} is not a number") from None


def read_examples(path: str, storage_options: dict | None = None) -> list[Example]:
    with fsspec.open(path, "rt", **(storage_options or {})) as f:
        reader = csv.DictReader(f)
        fields = {name.strip().lower() for name in reader.fieldnames or []}
        if not {"label", "polarity"} <= fields or not fields & {"clip_id", "audio"}:
            raise ValueError(f"{path}: needs the columns label, polarity and clip_id or audio "
                             f"(found {', '.join(sorted(fields)) or 'none'})")
        examples = []
        for line, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            polarity = row.get("polarity", "").lower()
            if polarity not in POSITIVE | NEGATIVE:
                raise ValueError(f"{path} line {line}: polarity {row.get('polarity')!r} is not positive or negative")
            if not row.get("label"):
                raise ValueError(f"{path} line {line}: no label")
            clip_id, audio = row.get("clip_id") or None, row.get("audio") or None
            if bool(clip_id) == bool(audio):
                raise ValueError(f"{path} line {line}: give a clip_id or an audio file (one of them)")
            examples.append(Example(line, row["label"], polarity in POSITIVE, clip_id,
                                    _number(row.get("window"), int, "window", line), audio,
                                    _number(row.get("start"), float, "start", line),
                                    _number(row.get("end"), float, "end", line)))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def embed_examples(examples: list[Example], archive, embedder_factory) -> np.ndarray:
    """(n, dim) L2-normalised embeddings, one per example, in order. ``embedder_factory()`` gives a
    pipeline/vectors/query.py QueryEmbedder; called only when an example is an audio file."""
    embedder = None
    vectors = []
    for example in examples:
        if example.clip_id:
            try:
                vector = archive.vector_of(example.clip_id, example.window)
            except KeyError as e:
                raise ValueError(f"examples line {example.line}: {e.args[0]}") from None
        else:
            embedder = embedder or embedder_factory()
            vector = embedder.embed(example.audio, example.start, example.end)
        norm = float(np.linalg.norm(vector))
        vectors.append(np.asarray(vector, np.float32) / (norm if norm > 0 else 1.0))
    return np.stack(vectors)
