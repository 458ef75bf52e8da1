"""Credentials in URL user-info and in credential-like HTTP headers are used to read, and
recorded nowhere: not in clip ids, rows, the manifest (every path it records), error messages,
logs or the pipeline options (issue 19, finding 9).

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
