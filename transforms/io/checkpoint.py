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


# Bytes per element of each dtype the safetensors format defines (the 8-bit floats included).
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
MAX_SAFETENSORS_HEADER_BYTES = 100 << 20   # the safetensors library's own limit


def _read_safetensors_header(fs, path: str, uri: str) -> tuple[dict, int, int]:
    """(header, header length, file size); the header parsed, not yet checked."""
    size = fs.size(path)
    with fs.open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{WEIGHTS_FILE} in {uri} is truncated ({size} bytes)")
        header_len = int.from_bytes(prefix, "little")
        if header_len <= 0 or header_len > min(size - 8, MAX_SAFETENSORS_HEADER_BYTES):
            raise CheckpointError(f"{WEIGHTS_FILE} in {uri} is not a safetensors file (bad header length "
                                  f"{header_len} in a file of {size} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{WEIGHTS_FILE} in {uri} has a corrupt header: {e}") from e
    return header, header_len, size


def _tensor_entry(name, entry, where: str) -> tuple[int, int, list[int]]:
    """(begin, end, shape) of one header entry, or a CheckpointError saying what is malformed."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: entry {name!r} is a {type(entry).__name__}, not a tensor "
                              "description (an object with dtype, shape and data_offsets)")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        raise CheckpointError(f"{where}: tensor {name!r} has dtype {dtype!r}, not one of "
                              f"{', '.join(SAFETENSORS_DTYPE_BYTES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: tensor {name!r} has shape {shape!r}, not a list of "
                              "non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: tensor {name!r} has data_offsets {offsets!r}, not [begin, end] "
                              "with 0 <= begin <= end")
    count = 1
    for d in shape:
        count *= d
    begin, end = offsets
    if end - begin != count * SAFETENSORS_DTYPE_BYTES[dtype]:
        raise CheckpointError(f"{where}: tensor {name!r} ({dtype} {shape}) needs "
                              f"{count * SAFETENSORS_DTYPE_BYTES[dtype]} bytes, its data_offsets give "
                              f"{end - begin}")
    return begin, end, shape


def check_safetensors_header(fs, path: str, config: dict, uri: str) -> None:
    """Reads only the safetensors header and checks it as the format defines it: a JSON object
    of tensor entries (each an object: a known dtype, a shape of non-negative integers, and
    data_offsets whose size fits them), the tensors' byte ranges lying back to back from the
    start of the data to the file's end (no gap, no overlap, nothing outside the file), an
    optional ``__metadata__`` object of strings; then that the classifier fits config.json.
    A truncated, foreign or malformed file, or weights that do not fit, fail here at launch
    (one CheckpointError line) instead of on every worker."""
    header, header_len, size = _read_safetensors_header(fs, path, uri)
    where = f"{WEIGHTS_FILE} in {uri} has a malformed header"
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: a JSON {type(header).__name__}, not an object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{where}: __metadata__ is not an object of strings")
    tensors = {name: _tensor_entry(name, entry, where)
               for name, entry in header.items() if name != "__metadata__"}
    data_bytes = size - 8 - header_len
    end = max((e for _, e, _ in tensors.values()), default=0)
    if end > data_bytes:
        raise CheckpointError(f"{WEIGHTS_FILE} in {uri} is truncated: tensors need {8 + header_len + end} "
                              f"bytes, the file has {size}")
    position = 0
    for name, (begin, stop, _) in sorted(tensors.items(), key=lambda item: item[1][:2]):
        if begin != position:
            what = "overlaps the tensor before it" if begin < position else "leaves a gap before it"
            raise CheckpointError(f"{where}: tensor {name!r} at bytes {begin}-{stop} {what} (which "
                                  f"ends at {position})")
        position = stop
    if position != data_bytes:
        raise CheckpointError(f"{where}: {data_bytes - position} bytes after the last tensor")
    classifier = tensors.get("classifier.dense.weight")
    expected = [len(config.get("id2label", {})), config.get("hidden_size")]
    if classifier is None:
        raise CheckpointError(f"{WEIGHTS_FILE} in {uri} has no classifier.dense.weight: not an "
                              "ASTForAudioClassification checkpoint")
    if classifier[2] != expected:
        raise CheckpointError(f"classifier.dense.weight in {uri} has shape {classifier[2]}, "
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
    if not isinstance(config, dict):
        raise CheckpointError(f"{CONFIG_FILE} in {uri} is a JSON {type(config).__name__}, not an object")
    id2label = config.get("id2label")
    if not id2label:
        raise CheckpointError(f"{CONFIG_FILE} in {uri} has no id2label")
    if not isinstance(id2label, dict) or not all(str(k).isdigit() for k in id2label):
        raise CheckpointError(f"{CONFIG_FILE} in {uri}: id2label is not an object keyed by class index")
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
