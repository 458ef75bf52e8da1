"""--model as a Hugging Face model id: from a hub-layout cache offline, and through a local server
standing in for the hub (HF_ENDPOINT); never the internet. The rows equal those of the same
checkpoint given as a directory."""
import json
import logging
import os
import re
import socket

import huggingface_hub  # noqa: F401  (imported before any test sets HF_HUB_OFFLINE: it reads it once)
import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import UsageError, run
from pipeline.runs.layout import manifest_path
from tests.hub_server import FakeHub, HubRepo, read_folder, write_hub_cache
from transforms.io.checkpoint_cache import CheckpointDigestMismatch, fetch_checkpoint
from transforms.io.hub_models import HubModel, HubModelError, inspect_model, parse_hub_model

REPO = "testorg/tiny-ast"
TOKEN = "hf_test_token_never_recorded_9f3a"
LOADED = {"config.json", "model.safetensors", "preprocessor_config.json"}


def closed_port_endpoint() -> str:
    """An endpoint where nothing listens: any request the client made would fail."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def hub_env(monkeypatch, tmp_path):
    """A fresh Hugging Face home for the test; no token, online."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    for name in ("HF_HUB_CACHE", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def hub(tiny_checkpoint, hub_env):
    """The tiny checkpoint published as REPO (private: needs TOKEN) with a tag v1, and a
    pickle-only repo."""
    with FakeHub() as server:
        repo = HubRepo(token=TOKEN)
        files = read_folder(tiny_checkpoint)
        repo.add_commit({**files, "pytorch_model.bin": b"not to be fetched"}, "main", "v1")
        server.repos[REPO] = repo
        pickles = HubRepo()
        pickles.add_commit({"config.json": files["config.json"], "pytorch_model.bin": b"\x80\x04pickle"}, "main")
        server.repos["testorg/pickled"] = pickles
        hub_env.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def test_what_names_a_hub_model(tmp_path, monkeypatch):
    assert parse_hub_model("MIT/ast-finetuned-audioset-10-10-0.4593") == HubModel(
        "MIT/ast-finetuned-audioset-10-10-0.4593", "main")
    assert parse_hub_model("hf://MIT/ast@v1.0") == HubModel("MIT/ast", "v1.0")
    assert parse_hub_model("org/name@" + "a" * 40).pinned
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "ast").mkdir(parents=True)
    assert parse_hub_model("models/ast") is None            # an existing local folder stays a path
    for path in ("/models/ast", "s3://bucket/ast", "file:///x/y", "./a/b", "ast"):
        assert parse_hub_model(path) is None, path
    with pytest.raises(HubModelError, match="not a Hugging Face model id"):
        parse_hub_model("hf://just-a-name")


def test_a_revision_resolves_to_its_commit_and_only_safetensors_files_are_fetched(hub, hub_env, tmp_path):
    hub_env.setenv("HF_TOKEN", TOKEN)
    info = inspect_model(f"{REPO}@v1")
    commit = hub.repos[REPO].refs["v1"]
    assert info.uri == f"hf://{REPO}@{commit}" and info.model_id == REPO
    assert info.hub == {"repo_id": REPO, "revision": "v1", "commit": commit}
    fetched = {p.rsplit("/", 1)[-1] for p in hub.paths("GET") if "/resolve/" in p}
    assert fetched == LOADED                                   # never pytorch_model.bin
    assert {auth for _, _, auth in hub.requests} == {f"Bearer {TOKEN}"}
    snapshot = os.path.join(os.environ["HF_HOME"], "hub", "models--testorg--tiny-ast", "snapshots", commit)
    assert set(os.listdir(snapshot)) == LOADED
    # A worker on this machine finds the pinned commit in the cache: it asks the hub nothing.
    asked = len(hub.requests)
    assert fetch_checkpoint(info.uri, None, info.file_sha256) == snapshot
    assert len(hub.requests) == asked
    # A worker on another machine (an empty cache) downloads that very commit, even if main moved.
    hub.repos[REPO].add_commit({"config.json": b"{}"}, "main")
    hub_env.setenv("HF_HOME", str(tmp_path / "worker_hf_home"))
    folder = fetch_checkpoint(info.uri, None, info.file_sha256)
    assert folder.startswith(str(tmp_path / "worker_hf_home")) and folder.endswith(commit)
    assert {p.rsplit("/", 1)[-1] for m, p, _ in hub.requests[asked:] if m == "GET" and "/resolve/" in p} == LOADED


def test_hub_failures_name_the_model_and_the_reason(hub, hub_env):
    with pytest.raises(HubModelError, match="no such model on the hub, or it is private"):
        inspect_model(REPO)                                     # private, no token
    hub_env.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(HubModelError, match="has no revision 'v9'"):
        inspect_model(f"hf://{REPO}@v9")
    with pytest.raises(HubModelError, match=r"only pickle weights \(pytorch_model.bin\); refusing"):
        inspect_model("testorg/pickled")
    assert not [p for p in hub.paths("GET") if p.endswith(".bin")]


def test_offline_from_a_hub_layout_cache(tiny_checkpoint, hub_env, tmp_path):
    hub_env.setenv("HF_HUB_OFFLINE", "1")
    hub_env.setenv("HF_ENDPOINT", closed_port_endpoint())
    commit = write_hub_cache(str(tmp_path / "hf_home" / "hub"), REPO, read_folder(tiny_checkpoint))
    info = inspect_model(REPO)
    assert info.uri == f"hf://{REPO}@{commit}" and info.hub["commit"] == commit
    with pytest.raises(HubModelError, match="HF_HUB_OFFLINE is set and the Hugging Face cache"):
        inspect_model(f"{REPO}@v2")


def test_workers_verify_their_copy_against_the_launchers_digests(tiny_checkpoint, hub_env, tmp_path):
    hub_env.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf_home" / "hub"
    write_hub_cache(str(cache), REPO, read_folder(tiny_checkpoint))
    info = inspect_model(REPO)
    folder = fetch_checkpoint(info.uri, None, info.file_sha256)
    assert set(os.listdir(folder)) == LOADED
    blob = os.path.realpath(os.path.join(folder, "config.json"))
    with open(blob, "a") as f:
        f.write(" ")
    with pytest.raises(CheckpointDigestMismatch, match="config.json"):
        fetch_checkpoint(info.uri, None, info.file_sha256)


def test_a_hub_id_that_cannot_be_resolved_is_a_launch_error(hub_env, tmp_path):
    hub_env.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="--model hf://nobody/nothing@main: HF_HUB_OFFLINE"):
        run(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--model", "nobody/nothing"])


ROW_FIELDS_THAT_NAME_THE_RUN = {"run_id", "labelled_at", "recorded_at", "model_id"}


def rows(summary):
    def value(v):
        # A message may name a file object by its address ("<... object at 0x7f...>").
        return re.sub(r" at 0x[0-9a-f]+", "", json.dumps(v, sort_keys=True, default=str))

    def strip(table):
        return sorted((tuple((k, value(v)) for k, v in sorted(r.items()) if k not in ROW_FIELDS_THAT_NAME_THE_RUN)
                       for r in table.to_pylist()))
    return strip(summary.clips), strip(summary.segments), strip(summary.errors)


@pytest.fixture(scope="module")
def audio_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hub_audio")
    write_audio(str(folder / "a.wav"), tone(2.0, 16000, 440.0), 16000)
    write_audio(str(folder / "b.flac"), noise(12.0, 22050, 3), 22050)
    (folder / "c.wav").write_bytes(b"not audio")
    return str(folder)


def label(audio_folder, model, out, run_id):
    return run(["--input", audio_folder, "--output", out, "--model", model, "--batch_size", "2",
                "--run_id", run_id, "--max_error_fraction", "1.0"])


@pytest.mark.slow
def test_a_hub_model_labels_as_the_same_checkpoint_given_as_a_directory(audio_folder, tiny_checkpoint, hub,
                                                                       hub_env, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    by_dir = label(audio_folder, tiny_checkpoint, str(tmp_path / "dir"), "dir")
    hub_env.setenv("HF_TOKEN", TOKEN)
    commit = hub.repos[REPO].refs["v1"]
    out = str(tmp_path / "endpoint")
    by_endpoint = label(audio_folder, f"hf://{REPO}@v1", out, "endpoint")
    # Offline, from the cache the endpoint run filled (laid out by huggingface_hub itself).
    hub_env.setenv("HF_HUB_OFFLINE", "1")
    hub_env.setenv("HF_ENDPOINT", closed_port_endpoint())
    hub_env.delenv("HF_TOKEN")
    by_cache = label(audio_folder, f"{REPO}@v1", str(tmp_path / "offline"), "offline")
    assert by_dir.labelled == 2 and by_dir.errored == 1
    assert rows(by_endpoint) == rows(by_dir) == rows(by_cache)
    assert {r["model_id"] for r in by_endpoint.clips.to_pylist()} == {REPO}
    manifest = json.loads(open(manifest_path(out, "endpoint")).read())
    assert manifest["model"]["uri"] == f"hf://{REPO}@{commit}"
    assert manifest["model"]["hub"] == {"repo_id": REPO, "revision": "v1", "commit": commit}
    for root, _, names in os.walk(out):
        for name in names:
            assert TOKEN.encode() not in open(os.path.join(root, name), "rb").read(), name
    assert f"hf://{REPO}@{commit}" in caplog.text and TOKEN not in caplog.text
    assert {auth for _, _, auth in hub.requests} == {f"Bearer {TOKEN}"}      # it went to the hub only


def test_evaluate_reads_a_hub_models_class_names_without_its_weights(hub, hub_env, tiny_checkpoint):
    """pipeline.evaluate needs config.json's id2label only: the weights stay on the hub."""
    from pipeline.evaluate import model_labels_from_checkpoint

    hub_env.setenv("HF_TOKEN", TOKEN)
    config = json.loads(read_folder(tiny_checkpoint)["config.json"])
    labels = model_labels_from_checkpoint(f"{REPO}@v1")
    assert labels == [config["id2label"][k] for k in sorted(config["id2label"], key=int)]
    fetched = {p.rsplit("/", 1)[-1] for p in hub.paths("GET") if "/resolve/" in p}
    assert fetched == {"config.json"}
