"""Embed a query recording with the index's own checkpoint, the way the pipeline embeds windows
(transforms/audio: decode, resample, window, Kaldi fbank; transforms/model: the AST). Beam-free.

The checkpoint (the index's, or ``--model``) must give the index's embedding fingerprint:
weights, config, feature settings, window and hop. A query longer than one window is cut into
windows as the pipeline cuts files, and its embedding is the mean of theirs (what a clip's
embedding is); one shorter than a window is padded as AST pads.
"""
from __future__ import annotations

import io

import numpy as np
import soundfile

from pipeline.vectors.audio_span import read_span
from transforms.audio.windowing import WindowedAudio, WindowGeometry
from transforms.io.checkpoint import inspect_checkpoint
from transforms.io.checkpoint_cache import fetch_checkpoint
from transforms.io.storage import Storage
from transforms.scoring.fingerprint import embedding_fingerprint, embedding_inputs


class FingerprintMismatch(ValueError):
    """The query model's embeddings are not comparable with the index's."""


def checkpoint_for(doc: dict, model: str | None, storage_options: dict | None = None):
    """(CheckpointInfo, WindowGeometry) of the model that embeds queries for the index ``doc``
    (pipeline/vectors/layout.py _INDEX.json); raises FingerprintMismatch when it differs."""
    uri = model or (doc.get("model") or {}).get("uri")
    if not uri:
        raise ValueError("the index records no model; give --model")
    checkpoint = inspect_checkpoint(uri, storage_options)
    window = doc["embedding_inputs"]["window"]
    geometry = WindowGeometry.for_features(checkpoint.features, window["hop_samples"] / window["sample_rate"])
    got = embedding_fingerprint(embedding_inputs(checkpoint, geometry))
    if got != doc["embedding_fingerprint"]:
        raise FingerprintMismatch(
            f"model {uri} gives embedding fingerprint {got[:12]}, the index was built from "
            f"{doc['embedding_fingerprint'][:12]} (model {doc.get('model', {}).get('model_id')}, "
            f"weights {str(doc.get('model', {}).get('weights_sha256'))[:12]}): its embeddings are not "
            "comparable; use the index's checkpoint")
    return checkpoint, geometry


class QueryEmbedder:
    """Loads the checkpoint once (native MindSpore AST, batch of one) and embeds recordings."""

    def __init__(self, doc: dict, model: str | None = None, storage_options: dict | None = None,
                 device: str = "cpu"):
        from transforms.mindspore_inference import load_runner

        self.checkpoint, self.geometry = checkpoint_for(doc, model, storage_options)
        self.storage = Storage(storage_options)
        local = fetch_checkpoint(self.checkpoint.uri, storage_options, self.checkpoint.file_sha256)
        self.runner = load_runner(local, "native", batch_size=1, device=device)

    def embed(self, audio: str, start: float | None = None, end: float | None = None) -> np.ndarray:
        """The embedding of ``audio`` (path or URL), or of its span ``start``..``end`` seconds."""
        pooled = []
        with self.storage.open(audio) as f:
            source = cut_span(f, start, end) if start is not None or end is not None else f
            with WindowedAudio(source, self.checkpoint.features, self.geometry.hop_seconds) as windows:
                for window in windows:
                    _, out = self.runner.predict(window.features[None])
                    pooled.append(out[0])
        if not pooled:
            raise ValueError(f"{audio}: no audio to embed")
        return np.mean(np.stack(pooled), axis=0).astype(np.float32)


def cut_span(f, start: float | None, end: float | None) -> io.BytesIO:
    """The span start..end seconds of an audio file as an in-memory WAV (the file's own rate and
    channels), for the decoder the pipeline uses."""
    samples, header = read_span(f, start or 0.0, end)
    rate = header.original_sample_rate
    if int(round((start or 0.0) * rate)) < 0 or not len(samples):
        raise ValueError(f"--start/--end: empty span {start}..{end} s of a {header.frames / rate:.2f} s recording")
    out = io.BytesIO()
    soundfile.write(out, samples, rate, format="WAV", subtype="FLOAT")
    out.seek(0)
    return out
