"""The whole job on the engines users run at night: a real Flink cluster (a JobManager and two
TaskManagers, tests/flink_cluster.py) and a real Spark standalone cluster (a master and two
workers, tests/spark_cluster.py), submitted the way users submit (Beam's FlinkRunner / SparkRunner,
which start Beam's job server for the engine), SDK harnesses from external worker pools. Each
TaskManager, Spark worker and pool has its own mount namespace with a private /tmp. Inputs
(plain files and tar shards), model and output are on SeaweedFS (tests/cluster_runs.py).

Each run must exit 0, publish, and hold the DirectRunner run's tables (same clip ids, labels,
scores to 1e-5); its summary (the pipeline's own tallies, _stats/summary.json: Flink's and
Spark's job servers report attempted metrics only) must match the tables. On Flink also: a
--skip_labelled run over the earlier runs reads no unchanged shard, and a TaskManager killed
mid-job (a restart strategy configured) either publishes with exact accounting or fails with
nothing published (docs/usage.md says which, and why).

Each cluster is started once, for its class of tests, and stopped before the other starts.
The software comes from package registries (tests/engine_dists.py; .ci/run fetches it first).
"""
import json
import logging
import shutil
import subprocess
import time

import pytest

from tests import engine_dists
from tests.cluster_runs import (assert_published, assert_same_tables, assert_summary_matches_tables,
                                job_args, launch_process, launcher_credentials, manifest, read_tables, run_stats,
                                timed, worker_env)
from tests.flink_cluster import RESTART_ATTEMPTS, FlinkCluster
from tests.portable_cluster import has_private_tmp, namespaces_available
from tests.spark_cluster import SparkCluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not namespaces_available(),
                       reason="needs root (unshare -m, mount -t tmpfs) for the private /tmp of "
                              "each TaskManager, Spark worker and worker pool"),
]

_LOG = logging.getLogger(__name__)
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report_timings():
    yield
    _LOG.warning("engine test timings (s): %s", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


@pytest.fixture(scope="module")
def java():
    if shutil.which("java") is None:
        pytest.fail("the Flink and Spark tests need Java 17: apt-get install openjdk-17-jre-headless "
                    "(.ci/run does)")


@pytest.fixture
def credentials(s3_server):
    with launcher_credentials(s3_server):
        yield


def engine_cluster(name, fetch, cluster_class, s3_server, tmp_path_factory):
    """A class fixture's body: the engine's software (fetched or cached), then its cluster."""
    began = time.monotonic()
    dist = fetch()
    TIMINGS[f"{name} software (fetched or cached)"] = time.monotonic() - began
    began = time.monotonic()
    cluster = cluster_class(str(tmp_path_factory.mktemp(name)), worker_env(s3_server), pools=1, dist=dist).start()
    TIMINGS[f"{name} start"] = time.monotonic() - began
    try:
        yield cluster
    finally:
        cluster.stop()


# ------------------------------------------------------------------ Flink

@pytest.fixture(scope="class")
def flink(java, s3_server, tmp_path_factory):
    yield from engine_cluster("flink", engine_dists.flink, FlinkCluster, s3_server, tmp_path_factory)


def finished_jobs(cluster: FlinkCluster) -> list[dict]:
    return [j for j in cluster.jobs() if j["state"] == "FINISHED"]


class TestFlink:
    def test_whole_job_publishes_the_direct_runners_tables(
            self, flink, cluster_corpus, s3_server, credentials, direct_reference):
        before = len(finished_jobs(flink))
        rc = timed(TIMINGS, "flink run", [*job_args(cluster_corpus, s3_server, "flink"),
                                          *flink.pipeline_args()])
        assert rc == 0
        jobs = finished_jobs(flink)
        assert len(jobs) == before + 1, "the job did not run on the Flink cluster"
        TIMINGS["flink run: the job on the cluster"] = max(j["duration"] for j in jobs) / 1000
        assert_published(s3_server, cluster_corpus, "flink", direct_reference)

    def test_skip_labelled_run_reads_no_unchanged_shard(
            self, flink, cluster_corpus, s3_server, credentials, direct_reference):
        """Over the earlier runs (the DirectRunner's and the Flink run above): every clip was
        labelled the same way from unchanged sources, except the corrupt member of b.tar.gz,
        which errored; so a.tar is not opened, b.tar.gz is read again for that member, and the
        loose files are skipped."""
        corpus = cluster_corpus
        rc = timed(TIMINGS, "flink run, --skip_labelled",
                   [*job_args(corpus, s3_server, "flink-incremental"),
                    "--skip_labelled", corpus.output, *flink.pipeline_args()])
        assert rc == 0
        published = manifest(s3_server, corpus.output, "flink-incremental")
        assert published is not None
        tables = read_tables(s3_server, corpus.output, "flink-incremental")
        assert tables["clips"] == [] and tables["segments"] == []
        assert {r["clip_id"] for r in tables["errors"]} == corpus.errored
        assert_same_tables(tables, {**direct_reference, "clips": [], "segments": []})
        counts = assert_summary_matches_tables(s3_server, corpus.output, "flink-incremental",
                                               published, tables)
        assert (counts["discovered"], counts["labelled"], counts["errored"], counts["skipped"]) == \
            (len(corpus.clips) + len(corpus.errored), 0, len(corpus.errored), len(corpus.clips))
        assert (counts["shards_skipped"], counts["shards_read"]) == (1, 1)

    def test_taskmanager_killed_mid_job_publishes_exactly_or_nothing(
            self, flink, cluster_corpus, s3_server, credentials, direct_reference):
        """SIGKILL a TaskManager while the job runs. Flink restarts the job (fixed-delay restart
        strategy) on the TaskManager left; the run must then either publish the DirectRunner's
        tables with exact accounting (no clip lost or duplicated), or fail and publish nothing."""
        corpus = cluster_corpus
        known = {j["jid"] for j in flink.jobs()}
        began = time.monotonic()
        launcher = launch_process([*job_args(corpus, s3_server, "flink-killed"),
                                   *flink.pipeline_args()], s3_server)
        try:
            job = wait_for_running_job(flink, known, launcher)
            time.sleep(5)   # into the job: its sources read, SDK workers started
            busy = flink.taskmanagers_of(job)
            assert busy, "the job has no running task"
            victim = sorted(busy)[0]
            flink.kill_taskmanager(victim)
            _LOG.warning("killed %s during job %s", victim, job)
            rc = launcher.wait(timeout=900)
        finally:
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait()
        TIMINGS["flink run, TaskManager killed"] = time.monotonic() - began
        restarts = flink.rest(f"/jobs/{job}/exceptions")["exceptionHistory"]["entries"]
        _LOG.warning("job %s: rc %s, failures: %s", job, rc,
                     [e["exceptionName"] + ": " + e["stacktrace"].splitlines()[0][:300] for e in restarts])
        assert restarts, "the job saw no failure: the TaskManager died after its work was done"
        published = manifest(s3_server, corpus.output, "flink-killed")
        if rc == 0:
            TIMINGS["kill outcome: published"] = 1
            assert_published(s3_server, corpus, "flink-killed", direct_reference)
            assert flink.rest(f"/jobs/{job}")["state"] == "FINISHED"
        else:
            TIMINGS["kill outcome: failed"] = 1
            assert published is None
        flink.start_taskmanager(int(victim.removeprefix("taskmanager")[0]))   # whole again
        flink.wait_for_taskmanagers(flink.taskmanagers)
        assert len(restarts) <= RESTART_ATTEMPTS


    def test_each_taskmanager_and_pool_has_a_private_tmp(self, flink, tmp_path):
        names = [*flink.started_taskmanagers, "pool"]
        for name in names:
            pids = flink.pids(name)
            assert pids, f"{name} is not running"
            assert all(has_private_tmp(pid, str(tmp_path)) for pid in pids), name
        assert "Starting worker with command" in flink.log("pool0"), "the pool started no SDK worker"


def wait_for_running_job(cluster: FlinkCluster, known: set, launcher: subprocess.Popen,
                         timeout: float = 600.0) -> str:
    """The id of the new job once it runs on the cluster."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and launcher.poll() is None:
        for j in cluster.jobs():
            if j["jid"] not in known and j["state"] == "RUNNING" and j["tasks"]["running"] > 0:
                return j["jid"]
        time.sleep(0.5)
    raise AssertionError("no new job ran on the Flink cluster")


# ------------------------------------------------------------------ Spark

@pytest.fixture(scope="class")
def spark_cluster(java, s3_server, tmp_path_factory):
    yield from engine_cluster("spark", engine_dists.spark, SparkCluster, s3_server, tmp_path_factory)


class TestSpark:
    def test_whole_job_publishes_the_direct_runners_tables(
            self, spark_cluster, cluster_corpus, s3_server, credentials, direct_reference,
            tmp_path):
        rc = timed(TIMINGS, "spark run", [*job_args(cluster_corpus, s3_server, "spark"),
                                          *spark_cluster.pipeline_args()])
        assert rc == 0
        apps = spark_cluster.state()["completedapps"]
        assert apps and apps[-1]["state"] == "FINISHED", "the job did not run on the Spark cluster"
        assert_published(s3_server, cluster_corpus, "spark", direct_reference)
        for name in ("worker0", "worker1", "pool0"):
            assert spark_cluster.pids(name) and all(
                has_private_tmp(pid, str(tmp_path)) for pid in spark_cluster.pids(name)), name
        stats = run_stats(s3_server, cluster_corpus.output, "spark",
                          manifest(s3_server, cluster_corpus.output, "spark"))
        assert stats["counts"]["shards_read"] == 2
