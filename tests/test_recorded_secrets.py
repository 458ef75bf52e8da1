"""Credentials in URL user-info and in credential-like HTTP headers are used to read, and
recorded nowhere: not in clip ids, rows, the manifest (every path it records), error messages,
logs or the pipeline options Beam's workers log (issue 19, finding 9).

A real loopback HTTP server requires Basic auth (the password is in the input URLs) and counts
the credential headers it receives, so the test also proves they were really used."""
import dataclasses
import datetime
import json
import logging

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.demo.audio import tone
from pipeline.launch.options import LabelAudioOptions
from pipeline.main import build_manifest, run
from pipeline.runs.layout import Attempt, manifest_path
from pipeline.runs.publish import read_json_document, write_json_document
from pipeline.runs.summary import RunSummary
from tests.http_server import FileServer
from tests.shard_corpus import audio_bytes, make_tar
from transforms.io.checkpoint import inspect_checkpoint

PASSWORD = "PASSW0RD-7c1e"
HEADERS = {"X-Api-Key": "APIKEY-5d2f9a", "Cookie": "session=COOKIE-81b3e0"}
SECRETS = (PASSWORD, "APIKEY-5d2f9a", "COOKIE-81b3e0")
WAV = audio_bytes("wav", tone(1.0, 16000, 440.0), 16000)


def test_the_manifest_scrubs_every_path_it_records(tiny_checkpoint, tmp_path):
    userinfo = f"https://alice:{PASSWORD}@h.example"
    argv = ["--input", f"{userinfo}/a.wav", "--input_manifest", f"{userinfo}/list.txt",
            "--output", str(tmp_path), "--model", f"{userinfo}/models/ast",
            "--skip_labelled", f"{userinfo}/labels", "--class_thresholds", f"{userinfo}/t.csv?token=TOKVAL93",
            "--label_map", f"{userinfo}/m.csv"]
    opts = PipelineOptions(argv).view_as(LabelAudioOptions)
    checkpoint = dataclasses.replace(inspect_checkpoint(tiny_checkpoint), uri=f"{userinfo}/models/ast")
    summary = RunSummary(Attempt.new(str(tmp_path), "r"), {"counts": {}})
    now = datetime.datetime.now(datetime.timezone.utc)
    manifest = build_manifest(opts, checkpoint, summary, now, now)
    text = json.dumps(manifest)
    assert PASSWORD not in text and "alice" not in text and "TOKVAL93" not in text
    assert manifest["model"]["uri"] == "https://h.example/models/ast"
    assert manifest["settings"]["skip_labelled"] == "https://h.example/labels"
    assert manifest["settings"]["class_thresholds"] == "https://h.example/t.csv"
    assert manifest["settings"]["label_map"] == "https://h.example/m.csv"
    assert manifest["inputs"] == ["https://h.example/a.wav"]


def test_every_manifest_is_scrubbed_as_it_is_written(tmp_path):
    """Parts added to a run's manifest after build_manifest (its files, its Iceberg record) and
    the index's and custom classes' manifests all go through write_json_document."""
    document = {"iceberg": {"catalog": f"postgresql://alice:{PASSWORD}@db.example/catalog"},
                "files": {"clips": ["clips/run_id=r/part-0.parquet"]},
                "model": {"uri": "https://h.example/m.safetensors?X-Amz-Signature=SIGVAL&v=2"}}
    write_json_document(str(tmp_path / "m.json"), document)
    assert read_json_document(str(tmp_path / "m.json")) == {
        "iceberg": {"catalog": "postgresql://db.example/catalog"},
        "files": {"clips": ["clips/run_id=r/part-0.parquet"]},
        "model": {"uri": "https://h.example/m.safetensors?v=2"}}


@pytest.fixture(scope="module")
def server():
    files = {"/a.wav": WAV, "/b.wav": WAV, "/bad.wav": b"not audio" * 50,
             "/s.tar": make_tar([("m1.wav", WAV), ("m2.wav", WAV)])}
    with FileServer(files, auth=("alice", PASSWORD)) as s:
        yield s


def test_user_info_and_secret_headers_are_used_but_never_recorded(server, tiny_checkpoint, tmp_path, caplog, capfd):
    secret = f"alice:{PASSWORD}"
    manifest = tmp_path / "inputs.txt"
    manifest.write_text("".join(server.url(p, secret) + "\n" for p in ("/a.wav", "/s.tar", "/bad.wav")))
    out = str(tmp_path / "out")
    with caplog.at_level(logging.DEBUG):
        summary = run(["--input_manifest", str(manifest), "--input", server.url("/b.wav", secret),
                       "--output", out, "--model", tiny_checkpoint, "--batch_size", "2", "--run_id", "auth",
                       "--storage_options", json.dumps({"http": {"headers": HEADERS}}),
                       "--max_error_fraction", "1.0"])
    # Read for real, with the password (the server refuses requests without) and the headers,
    # which left the public options but reached the filesystems by the secrets' way.
    gets = [headers for method, _, headers in server.requests if method == "GET"]
    assert gets and all(h.get("X-Api-Key") == HEADERS["X-Api-Key"] and h.get("Cookie") == HEADERS["Cookie"]
                        for h in gets)
    base = server.url("")
    assert sorted(summary.clips.column("clip_id").to_pylist()) == [
        f"{base}/a.wav", f"{base}/b.wav", f"{base}/s.tar#m1.wav", f"{base}/s.tar#m2.wav"]
    [error] = summary.errors.to_pylist()
    assert error["source_uri"] == f"{base}/bad.wav" and error["stage"] == "decode"
    with open(manifest_path(out, "auth")) as f:
        manifest_text = f.read()
    recorded = [json.dumps(summary.clips.to_pylist() + summary.errors.to_pylist()
                           + summary.segments.to_pylist(), default=str), manifest_text,
                "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)]
    captured = capfd.readouterr()
    recorded += [captured.out, captured.err]
    everything = "\n".join(recorded)
    for value in SECRETS:
        assert value not in everything, value
    assert json.loads(manifest_text)["inputs"] == [f"{base}/b.wav"]


def test_workers_and_runners_never_get_url_credentials_in_their_options(server, tiny_checkpoint, tmp_path):
    """Beam's SDK workers log the pipeline options they start with, and runners show them (Flink's
    web UI): the options Beam gets carry every URL scrubbed, while the DoFns, built from the
    launcher's real values, still read with the password. Launched as users launch it, with
    multi-process workers and every log line on (DEBUG); the manifest's parts added after it
    was built (files, attempt) are scrubbed too."""
    import subprocess
    import sys

    secret = f"alice:{PASSWORD}"
    query_token = "SIGVAL-4e0b77"
    out = str(tmp_path / "out")
    argv = [sys.executable, "run_pipeline.py", "--input", server.url("/a.wav", secret),
            f"--input={server.url('/b.wav', secret)}?X-Amz-Signature={query_token}",
            "--output", out, "--model", tiny_checkpoint, "--run_id", "workers", "--log_level", "DEBUG",
            "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # The workers started and logged their options (so the check below looks at them).
    assert "Pipeline_options" in done.stdout + done.stderr
    with open(manifest_path(out, "workers")) as f:
        manifest_text = f.read()
    everything = "\n".join([done.stdout, done.stderr, manifest_text])
    for value in (PASSWORD, "alice", query_token):
        assert value not in everything, value
    gets = [path for method, path, _ in server.requests if method == "GET"]
    assert any(p.startswith("/b.wav?X-Amz-Signature=" + query_token) for p in gets)
    base = server.url("")
    assert json.loads(manifest_text)["inputs"] == [f"{base}/a.wav", f"{base}/b.wav"]
