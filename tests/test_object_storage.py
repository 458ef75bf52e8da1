"""The whole job against a real S3 server (SeaweedFS on loopback): shards and loose files read by
glob or manifest from s3, tables written to s3 by Beam's S3 filesystem and read back."""
import json
import logging
import os
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.demo.audio import chirp, noise, tone
from pipeline.main import run
from pipeline.runs.layout import published_table_dir
from schemas.tables import SCHEMA_VERSION
from tests.shard_corpus import audio_bytes, compression_for, json_bytes, make_tar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def upload(fs, url: str, data: bytes) -> str:
    fs.pipe(url.removeprefix("s3://"), data)
    return url


def s3_args(server, with_credentials=True) -> list[str]:
    return ["--storage_options", json.dumps(server.storage_options(with_credentials)),
            *server.beam_s3_args()]


@pytest.fixture(scope="module")
def s3_corpus(s3_server):
    """3 shards (.tar, .tar.gz, .tgz) with a corrupt member and a non-audio one, plus loose files."""
    fs = s3_server.filesystem()
    root = f"s3://{s3_server.bucket}/e2e-{uuid.uuid4().hex[:8]}"
    shards = {
        "shards/shard-000.tar": [
            ("000.json", json_bytes({"speaker": "ann", "take": 1})),
            ("000.wav", audio_bytes("wav", tone(1.0, 16000, 440.0), 16000)),
            ("000.txt", b"a transcript, not audio"),
            ("001.flac", audio_bytes("flac", noise(2.0, 44100, 1), 44100, 2)),
        ],
        "shards/shard-001.tar.gz": [
            ("a/002.ogg", audio_bytes("ogg", chirp(1.5, 22050), 22050)),
            ("a/002.json", json_bytes({"speaker": "bob"})),
            ("a/003.mp3", audio_bytes("mp3", tone(1.0, 48000, 880.0), 48000, 2)),
            ("a/004.wav", np.random.default_rng(3).bytes(4000)),            # corrupt
        ],
        "shards/shard-002.tgz": [
            ("005.flac", audio_bytes("flac", chirp(1.0, 16000), 16000)),
            ("005.json", json_bytes({"tags": ["x", "y"]})),
            ("006.wav", audio_bytes("wav", noise(1.0, 8000, 2), 8000)),
        ],
    }
    for name, members in shards.items():
        upload(fs, f"{root}/{name}", make_tar(members, compression_for(name)))
    loose = [upload(fs, f"{root}/loose/x.wav", audio_bytes("wav", tone(1.0, 16000, 300.0), 16000)),
             upload(fs, f"{root}/loose/deeper/y.flac", audio_bytes("flac", noise(1.0, 22050, 4), 22050))]
    return root, shards, loose


@pytest.fixture(scope="module")
def s3_run(s3_server, s3_corpus, tiny_checkpoint):
    root, _, _ = s3_corpus
    output = f"{root}-out"
    summary = run(["--input", f"{root}/**", "--output", output, "--model", tiny_checkpoint,
                   "--batch_size", "4", "--run_id", "s3e2e", "--top_k", "2", *s3_args(s3_server)])
    return summary, output


def test_rows_are_audio_members_and_errors_the_corrupt_ones(s3_corpus, s3_run):
    root, shards, loose = s3_corpus
    summary, _ = s3_run
    expected_clips = {f"{root}/{shard}#{name}" for shard, members in shards.items()
                      for name, _ in members if name.endswith((".wav", ".flac", ".ogg", ".mp3"))}
    corrupt = f"{root}/shards/shard-001.tar.gz#a/004.wav"
    expected_clips.discard(corrupt)
    expected_clips |= set(loose)
    clips, errors = summary.clips.to_pylist(), summary.errors.to_pylist()
    assert {r["clip_id"] for r in clips} == expected_clips
    assert [(r["clip_id"], r["shard_uri"], r["member_name"], r["stage"]) for r in errors] == [
        (corrupt, f"{root}/shards/shard-001.tar.gz", "a/004.wav", "decode")]
    assert summary.discovered == len(expected_clips) + 1 == 9
    assert summary.shards_read == 3 and summary.members_ignored == 1   # 000.txt


def test_clip_rows_carry_shard_member_and_sidecar_meta(s3_corpus, s3_run):
    root, _, loose = s3_corpus
    summary, _ = s3_run
    rows = {r["clip_id"]: r for r in summary.clips.to_pylist()}
    first = rows[f"{root}/shards/shard-000.tar#000.wav"]
    assert first["shard_uri"] == f"{root}/shards/shard-000.tar" and first["member_name"] == "000.wav"
    assert first["source_uri"] == first["clip_id"]
    assert json.loads(first["meta"]) == {"speaker": "ann", "take": 1}
    assert rows[f"{root}/shards/shard-000.tar#001.flac"]["meta"] is None
    assert rows[f"{root}/shards/shard-000.tar#001.flac"]["channels"] == 2
    assert json.loads(rows[f"{root}/shards/shard-002.tgz#005.flac"]["meta"]) == {"tags": ["x", "y"]}
    assert rows[f"{root}/shards/shard-001.tar.gz#a/003.mp3"]["original_sample_rate"] == 48000
    for uri in loose:
        assert rows[uri]["shard_uri"] is None and rows[uri]["member_name"] is None
        assert rows[uri]["source_uri"] == uri


def test_tables_are_committed_on_s3(s3_server, s3_run):
    _, output = s3_run
    fs = s3_server.filesystem()
    for table in ("clips", "errors"):
        files = fs.glob(f"{published_table_dir(output, 's3e2e', table).removeprefix('s3://')}/*")
        assert files and all(f.endswith(".parquet") for f in files)   # no temp files left behind
        with fs.open(files[0], "rb") as f:
            assert pq.read_schema(f).metadata[b"schema_version"] == SCHEMA_VERSION.encode()
    assert not [p for p in fs.find(output.removeprefix("s3://")) if "beam-temp" in p]


def test_manifest_run_reads_exactly_the_listed_uris(s3_server, tiny_checkpoint, monkeypatch):
    fs = s3_server.filesystem()
    root = f"s3://{s3_server.bucket}/manifest-{uuid.uuid4().hex[:8]}"
    wav = audio_bytes("wav", tone(1.0, 16000), 16000)
    for name in ("a.wav", "b.wav", "unlisted.wav", "clips/c.wav"):
        upload(fs, f"{root}/{name}", wav)
    upload(fs, f"{root}/s.tar", make_tar([("m1.wav", wav), ("m2.wav", wav)]))
    upload(fs, f"{root}/unlisted.tar", make_tar([("m9.wav", wav)]))
    three = make_tar([("t1.wav", wav), ("t2.wav", wav), ("t3.wav", wav)])
    upload(fs, f"{root}/truncated.tar", three[:2 * (512 + len(wav) + 512) + 512 + 100])
    # relative and absolute entries, shards, one named twice, and three that cannot be read
    upload(fs, f"{root}/lists/m.txt", "\n".join([
        "../a.wav", f"{root}/clips/c.wav", f"{root}/s.tar", f"{root}/a.wav", f"{root}/truncated.tar",
        f"{root}/missing.wav", f"{root}/missing.tar"]).encode())
    # Credentials from the usual environment variables this time, the endpoint only in
    # --storage_options, no --s3_* flags: Beam's S3 sink must get the endpoint from there.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    summary = run(["--input_manifest", f"{root}/lists/m.txt", "--output", f"{root}/out",
                   "--model", tiny_checkpoint, "--batch_size", "2", "--run_id", "manifest", "--max_error_fraction", "1.0",
                   "--storage_options", json.dumps(s3_server.storage_options(with_credentials=False))])
    assert sorted(summary.clips.column("clip_id").to_pylist()) == sorted([
        f"{root}/a.wav", f"{root}/clips/c.wav", f"{root}/s.tar#m1.wav", f"{root}/s.tar#m2.wav",
        f"{root}/truncated.tar#t1.wav", f"{root}/truncated.tar#t2.wav"])
    errors = {r["source_uri"]: r for r in summary.errors.to_pylist()}
    assert sorted(errors) == [f"{root}/missing.tar", f"{root}/missing.wav", f"{root}/truncated.tar"]
    assert errors[f"{root}/missing.tar"]["error_type"] == "FileNotFoundError"
    assert errors[f"{root}/missing.tar"]["shard_uri"] == f"{root}/missing.tar"
    assert errors[f"{root}/missing.wav"]["shard_uri"] is None
    stopped = errors[f"{root}/truncated.tar"]
    assert stopped["error_type"] == "ReadError" and "after member 't2.wav'" in stopped["message"]
    # every listed thing is accounted for: 6 clips + 3 errors (run() checks this too)
    assert summary.discovered == 9
    assert fs.glob(f"{root.removeprefix('s3://')}/out/clips/run_id=manifest/*.parquet")


def test_two_workers_share_four_shards_read_from_s3_and_never_log_credentials(
        s3_server, tiny_checkpoint, capfd, caplog, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    caplog.set_level(logging.INFO)
    fs = s3_server.filesystem()
    root = f"s3://{s3_server.bucket}/workers-{uuid.uuid4().hex[:8]}"
    for i in range(4):
        upload(fs, f"{root}/in/shard-{i}.tar",
               make_tar([(f"{i}.wav", audio_bytes("wav", tone(1.0, 16000, 200.0 + 100 * i), 16000))]))
    summary = run(["--input", f"{root}/in/*.tar", "--output", f"{root}/out", "--model", tiny_checkpoint,
                   "--batch_size", "2", "--run_id", "mp", "--direct_num_workers", "2",
                   "--direct_running_mode", "multi_processing", *s3_args(s3_server),
                   # Beam's INFO in the workers (held back by default): their option dump.
                   "--default_sdk_harness_log_level", "INFO"])
    assert summary.clips.num_rows == 4 and summary.errors.num_rows == 0
    # Each worker process read two shards from SeaweedFS: endpoint and credentials reached it.
    assert sorted(summary.shards_by_worker.values()) == [2, 2]
    assert os.getpid() not in summary.shards_by_worker
    captured = capfd.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "Pipeline_options" in logged        # the workers' option dump was captured...
    assert s3_server.secret_key not in logged  # ...and holds no credential
    assert s3_server.secret_key not in json.dumps(
        [summary.clips.to_pylist(), summary.errors.to_pylist()], default=str)
