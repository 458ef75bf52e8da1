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
import tempfile
from dataclasses import dataclass

import fsspec

from transforms.fbank import FeatureConfig
from transforms.storage import options_for_protocol, protocol_of

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
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


def _fs_and_path(uri: str, storage_options: dict | None = None):
    fs, path = fsspec.core.url_to_fs(uri, **options_for_protocol(storage_options or {}, protocol_of(uri)))
    return fs, path.rstrip("/")


def _read_json(fs, path: str, what: str) -> dict:
    try:
        with fs.open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{what} is not valid JSON ({path}): {e}") from e


def inspect_checkpoint(uri: str, storage_options: dict | None = None) -> CheckpointInfo:
    """Validates the directory and fingerprints the weights; fails fast with one clear message."""
    fs, root = _fs_and_path(uri, storage_options)
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
    config = _read_json(fs, f"{root}/{CONFIG_FILE}", CONFIG_FILE)
    id2label = config.get("id2label")
    if not id2label:
        raise CheckpointError(f"{CONFIG_FILE} in {uri} has no id2label")
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    preprocessor = (_read_json(fs, f"{root}/{PREPROCESSOR_FILE}", PREPROCESSOR_FILE)
                    if PREPROCESSOR_FILE in names else None)
    digest = hashlib.sha256()
    with fs.open(f"{root}/{WEIGHTS_FILE}", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return CheckpointInfo(
        uri=uri,
        model_id=config.get("_name_or_path") or os.path.basename(root),
        weights_sha256=digest.hexdigest(),
        config=config,
        labels=labels,
        features=FeatureConfig.from_preprocessor_config(preprocessor, config),
    )


def local_checkpoint_dir(uri: str, storage_options: dict | None = None) -> str:
    """A local directory with the checkpoint's files, downloading them when remote."""
    fs, root = _fs_and_path(uri, storage_options)
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return root
    local = tempfile.mkdtemp(prefix="ast_checkpoint_")
    for name in (CONFIG_FILE, WEIGHTS_FILE, PREPROCESSOR_FILE):
        if fs.exists(f"{root}/{name}"):
            fs.get(f"{root}/{name}", os.path.join(local, name))
    return local
