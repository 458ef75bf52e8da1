"""Atomic publish: manifest written last, reruns replace, credentials never published."""
import json
import os

from pipeline.main import run
from pipeline.publish import MANIFEST_NAME, finished_runs, redact
from tests.audio_corpus import write_good


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_rerun_of_a_run_id_replaces_it_without_stale_files(tmp_path, tiny_checkpoint):
    audio = tmp_path / "audio"
    write_good(str(audio))
    out = str(tmp_path / "out")
    args = ["--input", str(audio), "--output", out, "--model", tiny_checkpoint, "--run_id", "nightly"]
    first = run(args)
    files_of_a_clean_run = _files(os.path.join(out, "nightly"))
    stale = os.path.join(out, "nightly", "clips", "part-99999-of-99999.parquet")
    with open(stale, "wb") as f:
        f.write(b"left over from a crashed attempt")
    second = run(args)
    assert not os.path.exists(stale)
    assert _files(os.path.join(out, "nightly")) == files_of_a_clean_run
    key = lambda r: r["clip_id"]  # noqa: E731
    strip = lambda rows: sorted(({k: v for k, v in r.items() if k != "labelled_at"} for r in rows), key=key)  # noqa: E731
    assert strip(first.clips.to_pylist()) == strip(second.clips.to_pylist())
    assert len(second.clips) == 5
    manifest = json.load(open(os.path.join(out, "nightly", MANIFEST_NAME)))
    assert manifest["counts"]["labelled"] == 5 and manifest["counts"]["discovered"] == 5
    assert manifest["model"]["weights_sha256"] and manifest["features"]["max_length"] == 1024
    assert finished_runs(out) == ["nightly"]


def test_unfinished_run_is_not_listed(tmp_path):
    (tmp_path / "r1" / "clips").mkdir(parents=True)
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / MANIFEST_NAME).write_text("{}")
    assert finished_runs(str(tmp_path)) == ["r2"]


def test_redact_hides_credentials_at_any_depth():
    opts = {"storage_options": {"key": "AKIA123", "secret": "s3cr3t",
                                "client_kwargs": {"endpoint_url": "http://h:1", "aws_session_token": "t"}},
            "s3_secret_access_key": "x", "input": ["s3://b/a"]}
    text = json.dumps(redact(opts))
    for secret in ("AKIA123", "s3cr3t", '"t"', '"x"'):
        assert secret not in text
    assert "http://h:1" in text and "s3://b/a" in text
