"""Workers verify the checkpoint they load against the launcher's digests, and keep remote
checkpoints in a per-machine cache keyed by digest (real S3: SeaweedFS on loopback)."""
import json
import logging
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint
from pipeline.runs.layout import manifest_path
from pipeline.main import run
from tests.audio_corpus import write_good
from transforms.io.checkpoint import CHECKPOINT_FILES, inspect_checkpoint
from transforms.io.machine_cache import CACHE_ENV
from transforms.io.checkpoint_cache import (CHECKPOINTS_SUBFOLDER, CheckpointDigestMismatch,
                                            cache_key, fetch_checkpoint, sha256_of_file)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def upload_checkpoint(server, local_dir: str) -> str:
    fs = server.filesystem()
    uri = f"s3://{server.bucket}/models/ast-{uuid.uuid4().hex[:8]}"
    for name in CHECKPOINT_FILES:
        fs.put(os.path.join(local_dir, name), f"{uri.removeprefix('s3://')}/{name}")
    return uri


def entries(cache: str) -> list[str]:
    base = os.path.join(cache, CHECKPOINTS_SUBFOLDER)
    return sorted(os.listdir(base)) if os.path.isdir(base) else []


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = str(tmp_path / "machine-cache")
    monkeypatch.setenv(CACHE_ENV, root)
    return root


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """Same architecture and labels as tiny_checkpoint, different random weights."""
    return write_checkpoint(str(tmp_path_factory.mktemp("tiny_ast_seed1")), TinyASTSpec(), seed=1)


def test_second_load_hits_the_cache_and_a_damaged_entry_is_rebuilt(s3_server, tiny_checkpoint, cache,
                                                                   caplog):
    options = s3_server.storage_options()
    uri = upload_checkpoint(s3_server, tiny_checkpoint)
    expected = inspect_checkpoint(uri, options).file_sha256
    assert sorted(expected) == sorted(CHECKPOINT_FILES)

    first = fetch_checkpoint(uri, options, expected)
    assert first == os.path.join(cache, CHECKPOINTS_SUBFOLDER, cache_key(expected))
    assert {n: sha256_of_file(os.path.join(first, n)) for n in CHECKPOINT_FILES} == expected
    assert entries(cache) == [cache_key(expected)]          # no temp folder left behind

    # The objects are gone from storage: a second load can only come from the cache.
    s3_server.filesystem().rm(uri.removeprefix("s3://"), recursive=True)
    assert fetch_checkpoint(uri, options, expected) == first

    # A damaged cache entry is found by its digest, moved aside and downloaded again.
    for name in CHECKPOINT_FILES:
        s3_server.filesystem().put(os.path.join(tiny_checkpoint, name), f"{uri.removeprefix('s3://')}/{name}")
    weights = os.path.join(first, "model.safetensors")
    with open(weights, "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    with caplog.at_level(logging.WARNING, logger="transforms.io.checkpoint_cache"):
        again = fetch_checkpoint(uri, options, expected)
    assert again == first
    assert sha256_of_file(weights) == expected["model.safetensors"]
    assert "is damaged" in caplog.text and "model.safetensors" in caplog.text
    assert entries(cache) == [cache_key(expected)]


def test_changed_weights_fail_the_load_and_leave_nothing_in_the_cache(s3_server, tiny_checkpoint,
                                                                      other_weights, cache):
    options = s3_server.storage_options()
    uri = upload_checkpoint(s3_server, tiny_checkpoint)
    expected = inspect_checkpoint(uri, options).file_sha256
    s3_server.filesystem().put(os.path.join(other_weights, "model.safetensors"),
                               f"{uri.removeprefix('s3://')}/model.safetensors")
    with pytest.raises(CheckpointDigestMismatch) as caught:
        fetch_checkpoint(uri, options, expected)
    message = str(caught.value)
    assert "digest mismatch" in message and "model.safetensors" in message
    assert expected["model.safetensors"] in message
    assert sha256_of_file(os.path.join(other_weights, "model.safetensors")) in message
    assert entries(cache) == []


def test_local_checkpoint_is_verified_in_place(tmp_path, tiny_checkpoint, cache):
    local = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, local)
    expected = inspect_checkpoint(str(local)).file_sha256
    assert fetch_checkpoint(str(local), None, expected) == str(local)
    config = json.loads((local / "config.json").read_text())
    config["id2label"]["0"] = "Renamed"
    (local / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointDigestMismatch, match="digest mismatch: config.json of"):
        fetch_checkpoint(str(local), None, expected)
    (local / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointDigestMismatch, match="preprocessor_config.json .*no such file"):
        fetch_checkpoint(str(local), None, {"preprocessor_config.json": expected["preprocessor_config.json"]})
    assert entries(cache) == []   # local checkpoints are never copied


_FETCH = """
import json, sys
from transforms.io.checkpoint_cache import fetch_checkpoint
uri, options, expected = json.loads(sys.argv[1])
print(fetch_checkpoint(uri, options, expected))
"""


def test_processes_loading_at_once_share_one_entry(s3_server, tiny_checkpoint, cache):
    options = s3_server.storage_options()
    uri = upload_checkpoint(s3_server, tiny_checkpoint)
    expected = inspect_checkpoint(uri, options).file_sha256
    env = dict(os.environ, PYTHONPATH=REPO, **{CACHE_ENV: cache})
    children = [subprocess.Popen([sys.executable, "-c", _FETCH, json.dumps([uri, options, expected])],
                                 cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0] * 4, [err[-2000:] for _, err in outputs]
    paths = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert paths == {os.path.join(cache, CHECKPOINTS_SUBFOLDER, cache_key(expected))}
    assert entries(cache) == [cache_key(expected)]          # every loser dropped its temp folder
    assert {n: sha256_of_file(os.path.join(cache, CHECKPOINTS_SUBFOLDER, cache_key(expected), n))
            for n in CHECKPOINT_FILES} == expected


def test_checkpoint_changed_after_launch_fails_the_job_and_publishes_nothing(
        s3_server, tiny_checkpoint, other_weights, cache, tmp_path, monkeypatch):
    import pipeline.main

    fs = s3_server.filesystem()
    uri = upload_checkpoint(s3_server, tiny_checkpoint)
    inspected = {}

    def inspect_then_replace(model, storage_options=None):
        # The seam: the launcher inspects the checkpoint, then someone replaces its weights on
        # storage before the workers load it.
        info = inspect_checkpoint(model, storage_options)
        inspected["sha256"] = info.weights_sha256
        fs.put(os.path.join(other_weights, "model.safetensors"),
               f"{uri.removeprefix('s3://')}/model.safetensors")
        return info

    monkeypatch.setattr(pipeline.main, "inspect_model", inspect_then_replace)
    audio = write_good(str(tmp_path / "audio"))[:2]
    output = f"s3://{s3_server.bucket}/labels-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Exception) as caught:
        run(["--input", *audio[:1], "--input", audio[1], "--output", output, "--model", uri,
             "--run_id", "changed", "--batch_size", "2",
             "--storage_options", json.dumps(s3_server.storage_options()), *s3_server.beam_s3_args()])
    message = str(caught.value)
    assert "checkpoint digest mismatch" in message and "model.safetensors" in message
    assert inspected["sha256"] in message
    assert not fs.exists(manifest_path(output, "changed").removeprefix("s3://"))
    assert entries(cache) == []
