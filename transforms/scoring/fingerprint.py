"""The labelling fingerprint: one SHA-256 over everything that changes a row. Beam-free.

Two runs label a clip "the same way" only when their fingerprints are equal (and the clip's
source is unchanged, transforms/io/incremental.py labelling_key), so --skip_labelled never keeps
rows that the current settings would have written differently.

The embedding fingerprint (:func:`embedding_fingerprint`) is the part of it that changes the
model's pooled outputs: weights, config, feature settings, window and hop.

What goes in: the checkpoint (weights, config.json, the effective preprocessor settings), the
window geometry (length and hop in samples), the aggregation, the activation, the label
selection (top_k, threshold, per-class thresholds and the label map, by content, never by path),
the optional outputs, the decoding limit (max_duration_seconds), the compute precision, the
tables' schema version and the version of the labelling rules in this code. What does not:
anything that changes how fast rows are made but not the rows (batch size, device, backend,
worker counts, model copies, storage options).

The inputs are hashed as canonical JSON (sorted keys, no spaces), so the digest does not depend
on dict order or on the Python version.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from schemas.tables import SCHEMA_VERSION
from transforms.audio.windowing import WindowGeometry
from transforms.io.checkpoint import CONFIG_FILE, CheckpointInfo
from transforms.scoring.labels import LabelSelection

# The rules by which this code turns the inputs below into rows (windowing, fbank, aggregation,
# label selection). Bump it when a change of code makes the same inputs give different rows
# without a schema change, so --skip_labelled relabels what the old code labelled.
LABELLING_RULES_VERSION = 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_of_json(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def _finite_or_none(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def selection_inputs(selection: LabelSelection) -> dict:
    """The label selection by content: the label map's pairs and the per-class thresholds are
    hashed (they can be long), not their files' paths, so moving a file changes nothing and
    editing one line changes the fingerprint."""
    label_map = None
    if selection.label_map is not None:
        label_map = sha256_of_json([list(pair) for pair in selection.label_map.pairs])
    class_thresholds = None
    if selection.class_thresholds is not None:
        # Aligned with the output labels; NaN (no threshold of its own) is written as null.
        class_thresholds = sha256_of_json(
            [[label, _finite_or_none(t)] for label, t in zip(selection.output_labels, selection.class_thresholds)])
    return {"top_k": selection.top_k,
            "threshold": None if selection.threshold is None else float(selection.threshold),
            "class_thresholds_sha256": class_thresholds,
            "label_map_sha256": label_map,
            "num_output_labels": len(selection.output_labels)}


# What makes an embedding: the entries of fingerprint_inputs that change the model's pooled
# output. Label settings (top_k, thresholds, label map, activation, aggregation) do not.
EMBEDDING_INPUT_KEYS = ("weights_sha256", "config_sha256", "features", "window")


def embedding_inputs(checkpoint: CheckpointInfo, geometry: WindowGeometry) -> dict:
    """The checkpoint and window geometry as both fingerprints take them."""
    return {
        "weights_sha256": checkpoint.weights_sha256,
        "config_sha256": checkpoint.file_sha256.get(CONFIG_FILE),
        # The settings the features are computed with (preprocessor_config.json as read, with
        # the defaults it leaves out), not the file's bytes: a reformatted file labels the same.
        "features": dataclasses.asdict(checkpoint.features),
        "window": {"window_samples": geometry.window_samples, "hop_samples": geometry.hop_samples,
                   "sample_rate": geometry.sample_rate},
    }


def embedding_fingerprint(inputs: dict) -> str:
    """The embedding fingerprint: SHA-256 over the weights, config, feature settings, window and
    hop only, from :func:`fingerprint_inputs`' result (as a run's manifest records it under
    ``fingerprint_inputs``) or from :func:`embedding_inputs`. Embeddings with equal embedding
    fingerprints are comparable (the archive search and custom classes check it); runs that
    differ only in label settings share one. Raises KeyError naming what the record lacks."""
    missing = [k for k in EMBEDDING_INPUT_KEYS if k not in inputs]
    if missing:
        raise KeyError(f"fingerprint inputs lack {', '.join(missing)}")
    return sha256_of_json({k: inputs[k] for k in EMBEDDING_INPUT_KEYS})


def fingerprint_inputs(checkpoint: CheckpointInfo, geometry: WindowGeometry, selection: LabelSelection, *,
                       aggregation: str, activation: str, emit_scores: bool, emit_embeddings: str | None,
                       max_duration_seconds: float | None, precision: str,
                       schema_version: str = SCHEMA_VERSION,
                       rules_version: int = LABELLING_RULES_VERSION) -> dict:
    """What the fingerprint is computed over, as a JSON-ready dict (readable: the manifest
    records it next to the fingerprint; no paths, URLs or credentials)."""
    return {
        "schema_version": schema_version,
        "rules_version": rules_version,
        **embedding_inputs(checkpoint, geometry),
        "aggregation": aggregation,
        "activation": activation,
        "labels": selection_inputs(selection),
        "emit_scores": bool(emit_scores),
        "emit_embeddings": emit_embeddings or None,
        "max_duration_seconds": None if max_duration_seconds is None else float(max_duration_seconds),
        "precision": precision,
    }


def labelling_fingerprint(inputs: dict) -> str:
    """The hex SHA-256 of :func:`fingerprint_inputs`' result."""
    return sha256_of_json(inputs)


def run_fingerprint(opts, checkpoint: CheckpointInfo, selection: LabelSelection) -> tuple[str, dict]:
    """(fingerprint, inputs) of a run from its options (pipeline/launch/options.py LabelAudioOptions, or
    any object with the same attribute names). Raises ValueError for a --hop_seconds the
    checkpoint's window cannot take."""
    inputs = fingerprint_inputs(
        checkpoint, WindowGeometry.for_features(checkpoint.features, opts.hop_seconds), selection,
        aggregation=opts.aggregate, activation=opts.activation, emit_scores=opts.emit_scores,
        emit_embeddings=opts.emit_embeddings, max_duration_seconds=opts.max_duration_seconds,
        precision=opts.precision)
    return labelling_fingerprint(inputs), inputs
