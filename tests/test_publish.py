"""Atomic publish: each attempt in its own folder, the manifest swapped last, reruns replace
without losing the earlier publication, credentials never published."""
import json
import os

import pyarrow.dataset as ds
import pytest

from pipeline.main import main, run
from pipeline.runs.publish import finished_runs, read_manifest, redact
from pipeline.runs.layout import MANIFEST_NAME, lease_path, published_table_dir, run_meta_dir
from pipeline.runs.summary import read_table
from transforms import mindspore_inference
from tests.audio_corpus import write_good


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def _published(out, run_id):
    """Every published byte of a run, by path under the output root."""
    found = {}
    for table in ("clips", "segments", "errors"):
        folder = published_table_dir(out, run_id, table)
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), "rb") as f:
                found[f"{table}/run_id={run_id}/{name}"] = f.read()
    return found


def test_rerun_of_a_run_id_replaces_it_and_retires_the_earlier_attempt(tmp_path, tiny_checkpoint):
    audio = tmp_path / "audio"
    write_good(str(audio))
    out = str(tmp_path / "out")
    args = ["--input", str(audio), "--output", out, "--model", tiny_checkpoint, "--run_id", "nightly"]
    first = run(args)
    first_manifest = read_manifest(out, "nightly")
    # A file a crashed attempt left in a table folder (its launcher died while publishing).
    stale = os.path.join(published_table_dir(out, "nightly", "clips"), "part-crashed-00000-of-00001.parquet")
    with open(stale, "wb") as f:
        f.write(b"left over from a crashed attempt")
    second = run(args)
    manifest = read_manifest(out, "nightly")
    assert manifest["attempt"] != first_manifest["attempt"]
    assert not os.path.exists(stale)
    # The table folders hold exactly the new attempt's files, named by it.
    assert sorted(_published(out, "nightly")) == sorted(p for ps in manifest["files"].values() for p in ps)
    assert all(f"part-{manifest['attempt']}-" in p for ps in manifest["files"].values() for p in ps)
    # Of the run's own folder only the manifest and the published attempt's statistics remain.
    assert sorted(os.listdir(run_meta_dir(out, "nightly"))) == sorted([MANIFEST_NAME, manifest["attempt"]])
    assert os.listdir(os.path.join(run_meta_dir(out, "nightly"), manifest["attempt"])) == ["_stats"]
    assert not os.path.exists(lease_path(out, "nightly"))
    key = lambda r: r["clip_id"]  # noqa: E731
    strip = lambda rows: sorted(({k: v for k, v in r.items() if k != "labelled_at"} for r in rows), key=key)  # noqa: E731
    assert strip(first.clips.to_pylist()) == strip(second.clips.to_pylist())
    assert len(second.clips) == 5
    assert manifest["counts"]["labelled"] == 5 and manifest["counts"]["discovered"] == 5
    assert manifest["model"]["weights_sha256"] and manifest["features"]["max_length"] == 1024
    assert finished_runs(out) == ["nightly"]
    # Nothing but Parquet under the table folders; everything else of ours starts with "_".
    assert sorted(os.listdir(out)) == ["_runs", "clips", "errors", "segments"]
    assert all(p.endswith(".parquet") for t in ("clips", "errors", "segments") for p in _files(os.path.join(out, t)))


def _rows(out, run_id):
    return {t: sorted(read_table(out, run_id, t).to_pylist(), key=str) for t in ("clips", "segments", "errors")}


def _dataset_clips(out):
    """What a reader that globs the table folder sees (pyarrow's Hive partition discovery)."""
    return ds.dataset(os.path.join(out, "clips"), format="parquet", partitioning="hive").to_table()


def test_a_rerun_that_fails_midway_leaves_the_earlier_publication_readable(tmp_path, tiny_checkpoint, monkeypatch):
    audio = tmp_path / "audio"
    write_good(str(audio))
    out = str(tmp_path / "out")
    args = ["--input", str(audio), "--output", out, "--model", tiny_checkpoint, "--run_id", "nightly",
            "--batch_size", "2"]
    run(args)
    manifest, published, rows = read_manifest(out, "nightly"), _published(out, "nightly"), _rows(out, "nightly")
    globbed = _dataset_clips(out).num_rows

    # 1. The job itself fails midway: the model runs out of memory after its first batch.
    real_load = mindspore_inference.load_runner
    calls = []

    def load_failing_model(*a, **k):
        real = real_load(*a, **k)

        class FailsAfterOneBatch:
            def input_shape(self):
                return real.input_shape()

            def predict(self, features):
                calls.append(len(features))
                if len(calls) > 1:
                    raise MemoryError("out of memory (test double around the real network)")
                return real.predict(features)
        return FailsAfterOneBatch()

    monkeypatch.setattr(mindspore_inference, "load_runner", load_failing_model)
    with pytest.raises(MemoryError):
        run(args)
    monkeypatch.undo()
    assert len(calls) > 1

    # 2. The job finishes but the run fails its error budget, after its files were all written.
    with open(audio / "broken.wav", "wb") as f:
        f.write(b"RIFF\x00\x00 not audio at all")
    assert main(args + ["--max_error_fraction", "0.0"]) == 1

    # After both failures the earlier publication is what it was, byte for byte, for readers
    # that follow the manifest and for readers that glob the table folder.
    assert read_manifest(out, "nightly") == manifest
    assert _published(out, "nightly") == published
    assert _rows(out, "nightly") == rows
    assert _dataset_clips(out).num_rows == globbed == 5
    assert finished_runs(out) == ["nightly"]
    assert not os.path.exists(lease_path(out, "nightly"))
    # The failed attempts' folders stay for inspection until the run id next publishes.
    attempts = [n for n in os.listdir(run_meta_dir(out, "nightly")) if not n.startswith("_")]
    assert len(attempts) == 3
    os.remove(audio / "broken.wav")
    run(args)
    attempts = [n for n in os.listdir(run_meta_dir(out, "nightly")) if not n.startswith("_")]
    assert attempts == [read_manifest(out, "nightly")["attempt"]]


def test_unfinished_run_is_not_listed(tmp_path):
    (tmp_path / "_runs" / "r1" / "20260101T000000Z-abcdef" / "clips").mkdir(parents=True)
    (tmp_path / "_runs" / "r2").mkdir(parents=True)
    (tmp_path / "_runs" / "r2" / MANIFEST_NAME).write_text("{}")
    assert finished_runs(str(tmp_path)) == ["r2"]


def test_redact_hides_credentials_at_any_depth():
    opts = {"storage_options": {"key": "AKIA123", "secret": "s3cr3t",
                                "client_kwargs": {"endpoint_url": "http://h:1", "aws_session_token": "t"}},
            "s3_secret_access_key": "x", "input": ["s3://b/a"]}
    text = json.dumps(redact(opts))
    for secret in ("AKIA123", "s3cr3t", '"t"', '"x"'):
        assert secret not in text
    assert "http://h:1" in text and "s3://b/a" in text


def test_a_failed_iceberg_commit_moves_the_files_back(tmp_path, tiny_checkpoint, monkeypatch):
    """Step 2 failing after step 1 moved the files: they go back to the attempt's folder, the
    table folders hold none of them, and nothing is published."""
    from pipeline.lakehouse import iceberg_commit as iceberg

    audio = tmp_path / "audio"
    write_good(str(audio))
    out = str(tmp_path / "out")

    def refuse(*args, **kwargs):
        raise ConnectionError("catalog unreachable (test double around the real commit)")

    monkeypatch.setattr(iceberg, "commit_run", refuse)
    with pytest.raises(ConnectionError, match="catalog unreachable"):
        run(["--input", str(audio), "--output", out, "--model", tiny_checkpoint, "--run_id", "nightly",
             "--iceberg_catalog", "local"])
    assert finished_runs(out) == [] and read_manifest(out, "nightly") is None
    for table in ("clips", "segments", "errors"):
        folder = published_table_dir(out, "nightly", table)
        assert not os.path.isdir(folder) or os.listdir(folder) == []
    (attempt,) = [n for n in os.listdir(run_meta_dir(out, "nightly")) if not n.startswith("_")]
    moved_back = os.listdir(os.path.join(run_meta_dir(out, "nightly"), attempt, "clips"))
    assert len(moved_back) >= 1 and all(n.startswith(f"part-{attempt}-") for n in moved_back)
