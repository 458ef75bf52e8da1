import hashlib
import json
import os
import shutil

import pytest

from transforms.checkpoint import CheckpointError, inspect_checkpoint


def test_inspect_reads_labels_features_and_hash(tiny_checkpoint):
    info = inspect_checkpoint(tiny_checkpoint)
    with open(os.path.join(tiny_checkpoint, "model.safetensors"), "rb") as f:
        assert info.weights_sha256 == hashlib.sha256(f.read()).hexdigest()
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
