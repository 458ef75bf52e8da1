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
import time

import pytest
from apache_beam.metrics.execution import MetricResult

import pipeline.main as launcher
from pipeline.demo.audio import tone
from tests.cluster_runs import (assert_published, job_args, launcher_credentials, manifest,
                                timed, worker_env)
from tests.portable_cluster import PortableCluster, has_private_tmp, namespaces_available
from tests.shard_corpus import audio_bytes

pytestmark = pytest.mark.skipif(
    not namespaces_available(),
    reason="needs root (unshare -m, mount -t tmpfs) to give each worker pool a private /tmp")

_LOG = logging.getLogger(__name__)
TIMINGS: dict[str, float] = {}


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def corpus(cluster_corpus):
    return cluster_corpus


@pytest.fixture
def credentials(s3_server):
    """The launcher's own credentials, in its own environment (this process), for one test.
    The pools were given theirs when they started; nothing here reaches them."""
    with launcher_credentials(s3_server):
        yield


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    started = time.monotonic()
    running = PortableCluster(str(tmp_path_factory.mktemp("portable_cluster")),
                              worker_env(s3_server), pools=2).start()
    TIMINGS["cluster start"] = time.monotonic() - started
    try:
        yield running
    finally:
        running.stop()
        _LOG.warning("portable runner test timings (s): %s",
                     json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


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


# ------------------------------------------------------------------ tests

def test_portable_run_on_pool_0_publishes_the_direct_runners_tables(
        cluster, corpus, s3_server, credentials, direct_reference):
    rc = timed(TIMINGS, "portable run, pool 0",
               [*job_args(corpus, s3_server, "portable-0"), *cluster.pipeline_args(0)])
    assert rc == 0
    assert_published(s3_server, corpus, "portable-0", direct_reference)


def test_attempted_only_metrics_run_on_pool_1_still_publishes_right_counts(
        cluster, corpus, s3_server, credentials, direct_reference, monkeypatch):
    reduce_metrics(monkeypatch, attempted_only=True)
    rc = timed(TIMINGS, "portable run, pool 1, attempted-only metrics",
               [*job_args(corpus, s3_server, "portable-attempted"), *cluster.pipeline_args(1)])
    assert rc == 0
    assert_published(s3_server, corpus, "portable-attempted", direct_reference)


def test_run_with_no_metrics_at_all_still_publishes_right_counts(
        cluster, corpus, s3_server, credentials, direct_reference, monkeypatch):
    reduce_metrics(monkeypatch, attempted_only=False)
    rc = timed(TIMINGS, "portable run, pool 0, no metrics",
               [*job_args(corpus, s3_server, "portable-nometrics"), *cluster.pipeline_args(0)])
    assert rc == 0
    assert_published(s3_server, corpus, "portable-nometrics", direct_reference)


def test_input_the_workers_cannot_see_fails_and_publishes_nothing(
        cluster, corpus, s3_server, credentials, tmp_path):
    """--shared_filesystem promises a local folder is on every worker; it is not (the pools'
    /tmp is private), so the workers find nothing there: the run must fail, not publish an
    empty or all-errors run."""
    output = corpus.output
    local = tmp_path / "audio"
    local.mkdir()
    (local / "here.wav").write_bytes(audio_bytes("wav", tone(1.0, 16000), 16000))
    args = job_args(corpus, s3_server, "portable-unseen")
    args[args.index("--input") + 1] = f"{local}/*.wav"
    rc = timed(TIMINGS, "portable run, pool 1, input the workers cannot see",
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
        assert has_private_tmp(pid, str(tmp_path))
