"""The whole job on Beam's PortableRunner: Beam's Python job service and two external SDK worker
pools, each in its own mount namespace with a private /tmp (tests/portable_cluster.py). Inputs
(plain files and tar shards), the model and the output are on SeaweedFS; the workers get the
endpoint and keys from their own environment, as a cluster's workers would, never from the
launcher. Each run's tables must equal a DirectRunner run's over the same inputs.

Beam's Python job service gives a job one worker from the one pool its --environment_config
names, so the runs here alternate between the pools and a test checks that each pool started
workers for them.

Flink's and Spark's job servers report attempted metric values only; other runners none at all.
The launcher's PipelineResult is wrapped (pipeline.main.run_job) to report just that, and the
run must still publish with the right counts.
"""
import json
import logging
import os
import time
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.execution import MetricResult

import pipeline.main as launcher
from pipeline.demo.audio import chirp, noise, tone
from pipeline.main import main
from pipeline.runs.layout import manifest_path, published_table_dir
from tests.portable_cluster import PortableCluster, namespaces_available
from tests.shard_corpus import audio_bytes, compression_for, json_bytes, make_tar

pytestmark = pytest.mark.skipif(
    not namespaces_available(),
    reason="needs root (unshare -m, mount -t tmpfs) to give each worker pool a private /tmp")

_LOG = logging.getLogger(__name__)
TIMINGS: dict[str, float] = {}


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def corpus(s3_server, tiny_checkpoint):
    """On S3: two loose files, a .tar and a .tar.gz shard (a sidecar, a non-audio member and a
    corrupt member among them), and the tiny model. Returns (input root, model URL, output root,
    expected clip ids, expected errored clip ids)."""
    fs = s3_server.filesystem()
    root = f"{s3_server.bucket}/portable-{uuid.uuid4().hex[:8]}"
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
    fs.put(tiny_checkpoint, f"{root}/model", recursive=True)
    url = f"s3://{root}"
    clips = {f"{url}/in/shards/a.tar#000.wav", f"{url}/in/shards/a.tar#001.flac",
             f"{url}/in/shards/b.tar.gz#002.ogg", f"{url}/in/loose/x.wav", f"{url}/in/loose/y.flac"}
    return url, f"{url}/model", f"{url}/out", clips, {f"{url}/in/shards/b.tar.gz#003.wav"}


@pytest.fixture(scope="module")
def launcher_credentials(s3_server):
    """The launcher's own credentials, in its own environment (this process). The pools were
    given theirs when they started; nothing here reaches them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
        mp.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
        yield


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    worker_env = {"AWS_ACCESS_KEY_ID": s3_server.access_key,
                  "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                  "AWS_ENDPOINT_URL_S3": s3_server.endpoint,
                  "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    started = time.monotonic()
    running = PortableCluster(str(tmp_path_factory.mktemp("portable_cluster")), worker_env,
                              pools=2).start()
    TIMINGS["cluster start"] = time.monotonic() - started
    try:
        yield running
    finally:
        running.stop()
        _LOG.warning("portable runner test timings (s): %s",
                     json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


def job_args(corpus, s3_server, run_id: str) -> list[str]:
    """Everything but the runner: inputs, model and output on S3, endpoint by --s3_endpoint_url,
    no credentials on the command line."""
    root, model, output, _, _ = corpus
    return ["--input", f"{root}/in/**", "--output", output, "--model", model, "--run_id", run_id,
            "--batch_size", "4", "--top_k", "3", "--emit_scores", "--device", "cpu",
            "--s3_endpoint_url", s3_server.endpoint, "--s3_disable_ssl"]


def launch(argv: list[str]) -> int:
    """The launcher as the command line runs it: main()'s exit code, or 1 where it raises (what
    Python exits with on an uncaught exception)."""
    try:
        return main(argv)
    except Exception:
        _LOG.exception("launch failed")
        return 1


def timed(name: str, argv: list[str]) -> int:
    started = time.monotonic()
    try:
        return launch(argv)
    finally:
        TIMINGS[name] = time.monotonic() - started


def read_tables(s3_server, output: str, run_id: str) -> dict:
    fs = s3_server.filesystem()
    tables = {}
    for table in ("clips", "segments", "errors"):
        files = sorted(fs.glob(f"{published_table_dir(output, run_id, table).removeprefix('s3://')}/*.parquet"))
        rows = []
        for path in files:
            with fs.open(path, "rb") as f:
                rows += pq.read_table(f).to_pylist()
        tables[table] = rows
    return tables


def manifest(s3_server, output: str, run_id: str) -> dict | None:
    fs = s3_server.filesystem()
    path = manifest_path(output, run_id).removeprefix("s3://")
    return json.loads(fs.cat(path)) if fs.exists(path) else None


@pytest.fixture(scope="module")
def direct_run(corpus, s3_server, launcher_credentials):
    """The reference: the same job on the DirectRunner (this process)."""
    rc = timed("direct run", job_args(corpus, s3_server, "direct"))
    assert rc == 0
    return read_tables(s3_server, corpus[2], "direct")


# ------------------------------------------------------------------ metric views

class _FewerMetrics:
    """MetricResults as a runner that reports less would give them: ``attempted`` values only
    (Flink's and Spark's job servers: committed is None), or nothing at all."""

    def __init__(self, results, attempted_only: bool):
        self._results, self._attempted_only = results, attempted_only

    def query(self, filter=None):
        found = self._results.query(filter)
        if not self._attempted_only:
            return {kind: [] for kind in found}
        return {kind: [MetricResult(r.key, None, r.attempted) for r in results]
                for kind, results in found.items()}


class _ResultWithFewerMetrics:
    def __init__(self, result, attempted_only: bool):
        self._result, self._attempted_only = result, attempted_only

    def metrics(self):
        return _FewerMetrics(self._result.metrics(), self._attempted_only)

    def __getattr__(self, name):
        return getattr(self._result, name)


def reduce_metrics(monkeypatch, attempted_only: bool) -> None:
    original = launcher.run_job
    monkeypatch.setattr(launcher, "run_job",
                        lambda p, on_started=None: _ResultWithFewerMetrics(original(p, on_started), attempted_only))


# ------------------------------------------------------------------ comparisons

def by_id(rows, *key):
    return {tuple(r[k] for k in key): r for r in rows}


def assert_same_tables(portable: dict, direct: dict) -> None:
    """Same clip ids, labels and scores (to 1e-5); same segments; same errors."""
    for table, key in (("clips", ("clip_id",)), ("segments", ("clip_id", "window_index"))):
        got, want = by_id(portable[table], *key), by_id(direct[table], *key)
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
                               "num_windows", "model_sha256"):
                    assert other[column] == row[column], (k, column)
    assert sorted((r["source_uri"], r["stage"], r["error_type"]) for r in portable["errors"]) == \
        sorted((r["source_uri"], r["stage"], r["error_type"]) for r in direct["errors"])


def assert_published(s3_server, corpus, run_id: str, direct: dict) -> dict:
    _, _, output, clips, errored = corpus
    published = manifest(s3_server, output, run_id)
    assert published is not None, f"{run_id}: no _MANIFEST.json"
    tables = read_tables(s3_server, output, run_id)
    assert {r["clip_id"] for r in tables["clips"]} == clips
    assert {r["clip_id"] for r in tables["errors"]} == errored
    assert_same_tables(tables, direct)
    counts = published["counts"]
    assert (counts["discovered"], counts["labelled"], counts["errored"], counts["skipped"]) == \
        (len(clips) + len(errored), len(clips), len(errored), 0)
    return published


# ------------------------------------------------------------------ tests

def test_portable_run_on_pool_0_publishes_the_direct_runners_tables(
        cluster, corpus, s3_server, launcher_credentials, direct_run):
    rc = timed("portable run, pool 0", [*job_args(corpus, s3_server, "portable-0"),
                                         *cluster.pipeline_args(0)])
    assert rc == 0
    assert_published(s3_server, corpus, "portable-0", direct_run)


def test_attempted_only_metrics_run_on_pool_1_still_publishes_right_counts(
        cluster, corpus, s3_server, launcher_credentials, direct_run, monkeypatch):
    reduce_metrics(monkeypatch, attempted_only=True)
    rc = timed("portable run, pool 1, attempted-only metrics",
               [*job_args(corpus, s3_server, "portable-attempted"), *cluster.pipeline_args(1)])
    assert rc == 0
    assert_published(s3_server, corpus, "portable-attempted", direct_run)


def test_run_with_no_metrics_at_all_still_publishes_right_counts(
        cluster, corpus, s3_server, launcher_credentials, direct_run, monkeypatch):
    reduce_metrics(monkeypatch, attempted_only=False)
    rc = timed("portable run, pool 0, no metrics",
               [*job_args(corpus, s3_server, "portable-nometrics"), *cluster.pipeline_args(0)])
    assert rc == 0
    assert_published(s3_server, corpus, "portable-nometrics", direct_run)


def test_input_the_workers_cannot_see_fails_and_publishes_nothing(
        cluster, corpus, s3_server, launcher_credentials, tmp_path):
    """--shared_filesystem promises a local folder is on every worker; it is not (the pools'
    /tmp is private), so the workers find nothing there: the run must fail, not publish an
    empty or all-errors run."""
    _, _, output, _, _ = corpus
    local = tmp_path / "audio"
    local.mkdir()
    (local / "here.wav").write_bytes(audio_bytes("wav", tone(1.0, 16000), 16000))
    args = job_args(corpus, s3_server, "portable-unseen")
    args[args.index("--input") + 1] = f"{local}/*.wav"
    rc = timed("portable run, pool 1, input the workers cannot see",
               [*args, "--shared_filesystem", *cluster.pipeline_args(1)])
    assert rc != 0
    assert manifest(s3_server, output, "portable-unseen") is None


def test_each_pool_started_workers_in_its_own_namespace(cluster, corpus, tmp_path):
    """The runs above went to both pools (this test runs after them: pytest keeps file order).
    Each pool (and the workers it forks) sees a private tmpfs on /tmp: not the launcher's
    pytest folders."""
    for index in range(cluster.pools):
        assert "Starting worker with command" in cluster.log(f"pool{index}"), \
            f"pool {index} started no worker"
    assert tmp_path.exists()
    for pid in cluster.pool_pids():
        with open(f"/proc/{pid}/mounts") as f:
            assert any(line.split()[1:3] == ["/tmp", "tmpfs"] for line in f)
        assert not os.path.exists(f"/proc/{pid}/root{tmp_path}")
