import hashlib
import json
import os
import shutil

import pytest

from transforms.io.checkpoint import CheckpointError, inspect_checkpoint


def test_inspect_reads_labels_features_and_hash(tiny_checkpoint):
    info = inspect_checkpoint(tiny_checkpoint)
    with open(os.path.join(tiny_checkpoint, "model.safetensors"), "rb") as f:
        assert info.weights_sha256 == hashlib.sha256(f.read()).hexdigest()
    # Every file a worker loads is fingerprinted, so workers can verify their copy.
    for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
        with open(os.path.join(tiny_checkpoint, name), "rb") as f:
            assert info.file_sha256[name] == hashlib.sha256(f.read()).hexdigest()
    assert len(info.file_sha256) == 3
    assert info.labels[:3] == ["Speech", "Music", "Silence"] and len(info.labels) == 12
    assert info.features.max_length == 1024 and info.features.num_mel_bins == 128


def test_pickle_checkpoint_is_refused(tmp_path, tiny_checkpoint):
    bad = tmp_path / "pickled"
    bad.mkdir()
    shutil.copy(os.path.join(tiny_checkpoint, "config.json"), bad)
    (bad / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        inspect_checkpoint(str(bad))


def test_missing_config_and_missing_dir(tmp_path, tiny_checkpoint):
    bad = tmp_path / "noconfig"
    bad.mkdir()
    shutil.copy(os.path.join(tiny_checkpoint, "model.safetensors"), bad)
    with pytest.raises(CheckpointError, match="config.json"):
        inspect_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match="not found"):
        inspect_checkpoint(str(tmp_path / "nowhere"))


def test_absent_preprocessor_config_uses_audioset_defaults(tmp_path, tiny_checkpoint):
    d = tmp_path / "nopre"
    d.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_checkpoint, name), d)
    cfg = json.load(open(d / "config.json"))
    cfg["max_length"] = 512
    json.dump(cfg, open(d / "config.json", "w"))
    features = inspect_checkpoint(str(d)).features
    assert (features.mean, features.std) == (pytest.approx(-4.2677393), pytest.approx(4.5689974))
    assert features.max_length == 512


def _copy_checkpoint(src, dst):
    dst.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy(os.path.join(src, name), dst)
    return dst


def test_weights_checked_against_sha256sums(tmp_path, tiny_checkpoint):
    d = _copy_checkpoint(tiny_checkpoint, tmp_path / "signed")
    digest = hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    (d / "SHA256SUMS").write_text(f"{digest}  model.safetensors\n")
    assert inspect_checkpoint(str(d)).weights_sha256 == digest
    weights = bytearray((d / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF                      # one flipped bit in the last tensor
    (d / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match="does not match SHA256SUMS"):
        inspect_checkpoint(str(d))
    (d / "SHA256SUMS").write_text("nothex  model.safetensors\n")
    with pytest.raises(CheckpointError, match="malformed"):
        inspect_checkpoint(str(d))


def test_malformed_config_fails_fast(tmp_path, tiny_checkpoint):
    d = _copy_checkpoint(tiny_checkpoint, tmp_path / "badjson")
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        inspect_checkpoint(str(d))


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:4], "truncated"),
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"\xff" * 8 + b[8:], "bad header length"),
    (lambda b: b[:8] + b"#" + b[9:], "corrupt header"),
])
def test_damaged_weights_fail_at_launch(tmp_path, tiny_checkpoint, damage, message):
    d = _copy_checkpoint(tiny_checkpoint, tmp_path / "damaged")
    (d / "model.safetensors").write_bytes(damage((d / "model.safetensors").read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        inspect_checkpoint(str(d))


def test_weights_that_do_not_fit_the_config(tmp_path, tiny_checkpoint):
    d = _copy_checkpoint(tiny_checkpoint, tmp_path / "mismatch")
    cfg = json.load(open(d / "config.json"))
    cfg["id2label"]["12"] = "Extra class"
    json.dump(cfg, open(d / "config.json", "w"))
    with pytest.raises(CheckpointError, match="labels x hidden_size"):
        inspect_checkpoint(str(d))
