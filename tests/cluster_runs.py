"""What the distributed-run tests share (tests/test_portable_runner.py, tests/test_engines.py): the
corpus on S3 (plain files and tar shards, the tiny model), the job's arguments, the launcher as
the command line runs it, reading a run's tables and manifest back from S3, and comparing a run's
tables with the DirectRunner's.

Inputs, model and output are on SeaweedFS (the session's ``s3_server``); the workers get the
endpoint and keys from their own environment, as a cluster's workers would, never from the
launcher: the launcher's keys are set only in its own environment, only while it runs
(:func:`launcher_credentials`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from pipeline.demo.audio import chirp, noise, tone
from pipeline.main import main
from pipeline.runs.layout import Attempt, manifest_path, published_table_dir
from tests.shard_corpus import audio_bytes, compression_for, json_bytes, make_tar

_LOG = logging.getLogger(__name__)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Corpus:
    root: str           # s3://bucket/<prefix>
    model: str
    output: str
    clips: frozenset    # clip ids that must be labelled
    errored: frozenset  # clip ids that must end in the errors table

    @property
    def shards(self) -> list[str]:
        return [f"{self.root}/in/shards/a.tar", f"{self.root}/in/shards/b.tar.gz"]


def make_corpus(s3_server, checkpoint: str, prefix: str) -> Corpus:
    """On S3: two loose files, a .tar and a .tar.gz shard (a sidecar, a non-audio member and a
    corrupt member among them), and the model."""
    fs = s3_server.filesystem()
    root = f"{s3_server.bucket}/{prefix}-{uuid.uuid4().hex[:8]}"
    shards = {
        "in/shards/a.tar": [("000.wav", audio_bytes("wav", tone(1.0, 16000, 440.0), 16000)),
                            ("000.json", json_bytes({"speaker": "ann"})),
                            ("001.flac", audio_bytes("flac", noise(1.5, 22050, 1), 22050, 2)),
                            ("notes.txt", b"not audio")],
        "in/shards/b.tar.gz": [("002.ogg", audio_bytes("ogg", chirp(1.0, 16000), 16000)),
                               ("003.wav", np.random.default_rng(5).bytes(3000))],   # corrupt
    }
    for name, members in shards.items():
        fs.pipe(f"{root}/{name}", make_tar(members, compression_for(name)))
    fs.pipe(f"{root}/in/loose/x.wav", audio_bytes("wav", tone(1.2, 8000, 300.0), 8000))
    fs.pipe(f"{root}/in/loose/y.flac", audio_bytes("flac", noise(0.8, 44100, 2), 44100))
    fs.put(checkpoint, f"{root}/model", recursive=True)
    url = f"s3://{root}"
    clips = frozenset({f"{url}/in/shards/a.tar#000.wav", f"{url}/in/shards/a.tar#001.flac",
                       f"{url}/in/shards/b.tar.gz#002.ogg", f"{url}/in/loose/x.wav",
                       f"{url}/in/loose/y.flac"})
    return Corpus(url, f"{url}/model", f"{url}/out", clips,
                  frozenset({f"{url}/in/shards/b.tar.gz#003.wav"}))


def worker_env(s3_server) -> dict:
    """The workers' own environment: their keys and endpoint, and the protobuf backend
    MindSpore needs."""
    return {"AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
            "AWS_ENDPOINT_URL_S3": s3_server.endpoint,
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}


@contextlib.contextmanager
def launcher_credentials(s3_server):
    """The launcher's own credentials, in its own environment (this process), for one run."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = s3_server.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = s3_server.secret_key
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def job_args(corpus: Corpus, s3_server, run_id: str) -> list[str]:
    """Everything but the runner: inputs, model and output on S3, endpoint by --s3_endpoint_url,
    no credentials on the command line."""
    return ["--input", f"{corpus.root}/in/**", "--output", corpus.output, "--model", corpus.model,
            "--run_id", run_id, "--batch_size", "4", "--top_k", "3", "--emit_scores",
            "--device", "cpu", "--s3_endpoint_url", s3_server.endpoint, "--s3_disable_ssl"]


def launch(argv: list[str]) -> int:
    """The launcher as the command line runs it: main()'s exit code, or 1 where it raises (what
    Python exits with on an uncaught exception)."""
    try:
        return main(argv)
    except Exception:
        _LOG.exception("launch failed")
        return 1


def launch_process(argv: list[str], s3_server) -> subprocess.Popen:
    """The launcher as its own process (``python run_pipeline.py ...``), with the launcher's
    credentials in its environment; for runs that must go on while the test does something."""
    env = {**os.environ, "PYTHONPATH": REPO, "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    return subprocess.Popen([sys.executable, os.path.join(REPO, "run_pipeline.py"), *argv],
                            env=env, cwd=REPO)


def timed(timings: dict, name: str, argv: list[str]) -> int:
    started = time.monotonic()
    try:
        return launch(argv)
    finally:
        timings[name] = time.monotonic() - started


def read_tables(s3_server, output: str, run_id: str) -> dict:
    fs = s3_server.filesystem()
    tables = {}
    for table in ("clips", "segments", "errors"):
        folder = published_table_dir(output, run_id, table).removeprefix("s3://")
        rows = []
        for path in sorted(fs.glob(f"{folder}/*.parquet")):
            with fs.open(path, "rb") as f:
                rows += pq.read_table(f).to_pylist()
        tables[table] = rows
    return tables


def manifest(s3_server, output: str, run_id: str) -> dict | None:
    fs = s3_server.filesystem()
    path = manifest_path(output, run_id).removeprefix("s3://")
    return json.loads(fs.cat(path)) if fs.exists(path) else None


def by_id(rows, *key):
    return {tuple(r[k] for k in key): r for r in rows}


def assert_same_tables(got_tables: dict, direct: dict) -> None:
    """Same clip ids, labels and scores (to 1e-5); same segments; same errors."""
    for table, key in (("clips", ("clip_id",)), ("segments", ("clip_id", "window_index"))):
        got, want = by_id(got_tables[table], *key), by_id(direct[table], *key)
        assert len(got) == len(got_tables[table]), f"{table}: duplicate rows"
        assert sorted(got) == sorted(want), table
        for k, row in want.items():
            other = got[k]
            assert [x["label"] for x in other["labels"]] == [x["label"] for x in row["labels"]], k
            np.testing.assert_allclose([x["score"] for x in other["labels"]],
                                       [x["score"] for x in row["labels"]], atol=1e-5, rtol=0)
            np.testing.assert_allclose(other["scores"], row["scores"], atol=1e-5, rtol=0)
            if table == "clips":
                for column in ("source_uri", "shard_uri", "member_name", "meta", "source_version",
                               "duration_seconds", "original_sample_rate", "channels",
                               "num_windows", "model_sha256", "labelling_fingerprint"):
                    assert other[column] == row[column], (k, column)
    assert sorted((r["source_uri"], r["stage"], r["error_type"]) for r in got_tables["errors"]) == \
        sorted((r["source_uri"], r["stage"], r["error_type"]) for r in direct["errors"])


def run_stats(s3_server, output: str, run_id: str, published: dict) -> dict:
    """The published attempt's _stats/summary.json: the pipeline's own tallies."""
    attempt = Attempt(output, run_id, published["attempt"])
    return json.loads(s3_server.filesystem().cat(attempt.summary_stats_path.removeprefix("s3://")))


def assert_summary_matches_tables(s3_server, output: str, run_id: str, published: dict,
                                  tables: dict) -> dict:
    """The run's summary (the pipeline's own tallies, _stats/summary.json, and the manifest's
    counts made from it) against the rows the tables hold. Returns the tallies."""
    tallies = run_stats(s3_server, output, run_id, published)["counts"]
    counts = {name: int(tallies.get(name, 0)) for name in (   # a tally that stayed 0 is absent
        "discovered", "labelled", "errored", "skipped", "segment_rows", "num_windows_total",
        "shards_read", "shards_skipped")}
    assert counts["labelled"] == published["counts"]["labelled"] == len(tables["clips"])
    assert counts["errored"] == published["counts"]["errored"] == len(tables["errors"])
    assert counts["skipped"] == published["counts"]["skipped"]
    assert counts["discovered"] == counts["labelled"] + counts["errored"] + counts["skipped"]
    assert counts["segment_rows"] == published["tables"]["segments"] == len(tables["segments"])
    assert counts["num_windows_total"] == sum(r["num_windows"] for r in tables["clips"])
    return counts


def assert_published(s3_server, corpus: Corpus, run_id: str, direct: dict) -> dict:
    published = manifest(s3_server, corpus.output, run_id)
    assert published is not None, f"{run_id}: no _MANIFEST.json"
    tables = read_tables(s3_server, corpus.output, run_id)
    assert {r["clip_id"] for r in tables["clips"]} == corpus.clips
    assert {r["clip_id"] for r in tables["errors"]} == corpus.errored
    assert_same_tables(tables, direct)
    counts = published["counts"]
    assert (counts["discovered"], counts["labelled"], counts["errored"], counts["skipped"]) == \
        (len(corpus.clips) + len(corpus.errored), len(corpus.clips), len(corpus.errored), 0)
    assert_summary_matches_tables(s3_server, corpus.output, run_id, published, tables)
    return published
