"""Inspect and fetch an AST checkpoint directory in Hugging Face layout. Beam-free.

A checkpoint is a directory (local path or any fsspec URL) holding config.json,
model.safetensors and optionally preprocessor_config.json. Only safetensors is
accepted: pickle-based weights (pytorch_model.bin) are unpickled without
restriction by the loaders, so a checkpoint could run arbitrary code.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import fsspec

from transforms.audio.fbank import FeatureConfig
from transforms.io.storage import options_for_protocol, protocol_of

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
# What a worker loads; the launcher fingerprints each of them that exists (CheckpointInfo.file_sha256).
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE)
# Optional, in `sha256sum` format ("<hex>  model.safetensors"): when present, the weights must match.
CHECKSUMS_FILE = "SHA256SUMS"
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.bin", "model.pt", "model.pth", "model.ckpt")


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class CheckpointInfo:
    uri: str
    model_id: str
    weights_sha256: str
    config: dict
    labels: list[str]
    features: FeatureConfig
    # SHA-256 of every checkpoint file present (weights, config, preprocessor config), as the
    # launcher read them: workers verify their copy against these before loading.
    file_sha256: dict[str, str] = field(default_factory=dict)
    # A Hugging Face model id (transforms/io/hub_models.py): {"repo_id", "revision" (as asked),
    # "commit" (the sha it resolved to)}; None for a checkpoint directory.
    hub: dict | None = None


def checkpoint_filesystem(uri: str, storage_options: dict | None = None):
    fs, path = fsspec.core.url_to_fs(uri, **options_for_protocol(storage_options or {}, protocol_of(uri)))
    return fs, path.rstrip("/")


def _read_json(fs, path: str, what: str) -> tuple[dict, str]:
    """The parsed file and the SHA-256 of the very bytes parsed."""
    with fs.open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw), hashlib.sha256(raw).hexdigest()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what} is not valid JSON ({path}): {e}") from e


def _expected_sha256(fs, path: str, uri: str) -> str:
    with fs.open(path, "rb") as f:
        text = f.read(1 << 20).decode("utf-8", errors="replace")
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 2 and parts[1].lstrip("*") == WEIGHTS_FILE:
            digest = parts[0].lower()
            if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
                return digest
            raise CheckpointError(f"{CHECKSUMS_FILE} in {uri} has a malformed sha256 for {WEIGHTS_FILE}")
    raise CheckpointError(f"{CHECKSUMS_FILE} in {uri} lists no sha256 for {WEIGHTS_FILE}")


def check_safetensors_header(fs, path: str, config: dict, uri: str) -> None:
    """Reads only the safetensors header: a truncated or foreign file, or weights that do not fit
    config.json, fail here at launch instead of on every worker."""
    size = fs.size(path)
    with fs.open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{WEIGHTS_FILE} in {uri} is truncated ({size} bytes)")
        header_len = int.from_bytes(prefix, "little")
        if header_len <= 0 or header_len > min(size - 8, 100 << 20):
            raise CheckpointError(f"{WEIGHTS_FILE} in {uri} is not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{WEIGHTS_FILE} in {uri} has a corrupt header: {e}") from e
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((v.get("data_offsets", [0, 0])[1] for v in tensors.values()), default=0)
    if 8 + header_len + end > size:
        raise CheckpointError(f"{WEIGHTS_FILE} in {uri} is truncated: tensors need {8 + header_len + end} "
                              f"bytes, the file has {size}")
    classifier = tensors.get("classifier.dense.weight")
    expected = [len(config.get("id2label", {})), config.get("hidden_size")]
    if classifier is None:
        raise CheckpointError(f"{WEIGHTS_FILE} in {uri} has no classifier.dense.weight: not an "
                              "ASTForAudioClassification checkpoint")
    if list(classifier.get("shape", [])) != expected:
        raise CheckpointError(f"classifier.dense.weight in {uri} has shape {classifier.get('shape')}, "
                              f"config.json implies {expected} (labels x hidden_size)")


def sha256_of_stream(f) -> str:
    """SHA-256 of an open binary file, read in 4 MiB blocks (weights are hundreds of MB)."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 22), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_of_file(path: str) -> str:
    with open(path, "rb") as f:
        return sha256_of_stream(f)


def inspect_checkpoint(uri: str, storage_options: dict | None = None) -> CheckpointInfo:
    """Validates the directory and fingerprints the weights; fails fast with one clear message."""
    fs, root = checkpoint_filesystem(uri, storage_options)
    if not fs.isdir(root):
        raise CheckpointError(f"model directory not found: {uri}")
    names = {os.path.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)}
    if WEIGHTS_FILE not in names:
        pickles = sorted(names.intersection(PICKLE_WEIGHTS))
        if pickles:
            raise CheckpointError(
                f"{uri} holds only pickle weights ({', '.join(pickles)}); refusing to load them because "
                "unpickling can run arbitrary code. Convert the checkpoint to model.safetensors.")
        raise CheckpointError(f"{uri} has no {WEIGHTS_FILE}")
    if CONFIG_FILE not in names:
        raise CheckpointError(f"{uri} has no {CONFIG_FILE}")
    config, config_sha256 = _read_json(fs, f"{root}/{CONFIG_FILE}", CONFIG_FILE)
    file_sha256 = {CONFIG_FILE: config_sha256}
    id2label = config.get("id2label")
    if not id2label:
        raise CheckpointError(f"{CONFIG_FILE} in {uri} has no id2label")
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    preprocessor = None
    if PREPROCESSOR_FILE in names:
        preprocessor, file_sha256[PREPROCESSOR_FILE] = _read_json(
            fs, f"{root}/{PREPROCESSOR_FILE}", PREPROCESSOR_FILE)
    check_safetensors_header(fs, f"{root}/{WEIGHTS_FILE}", config, uri)
    with fs.open(f"{root}/{WEIGHTS_FILE}", "rb") as f:
        weights_sha256 = sha256_of_stream(f)
    if CHECKSUMS_FILE in names:
        expected = _expected_sha256(fs, f"{root}/{CHECKSUMS_FILE}", uri)
        if expected != weights_sha256:
            raise CheckpointError(
                f"{WEIGHTS_FILE} in {uri} does not match {CHECKSUMS_FILE}: expected sha256 {expected}, "
                f"got {weights_sha256}; the weights were changed or corrupted")
    return CheckpointInfo(
        uri=uri,
        model_id=config.get("_name_or_path") or os.path.basename(root),
        weights_sha256=weights_sha256,
        config=config,
        labels=labels,
        features=FeatureConfig.from_preprocessor_config(preprocessor, config),
        file_sha256={**file_sha256, WEIGHTS_FILE: weights_sha256},
    )
