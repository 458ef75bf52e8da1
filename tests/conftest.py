"""Shared fixtures. The protobuf backend must be chosen before anything imports Beam."""
from transforms.model.runtime_env import ensure_protobuf_python_backend

ensure_protobuf_python_backend()

import os  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A small random AST in HF layout: 1024 frames, 128 mel bins, 12 labels."""
    return write_checkpoint(str(tmp_path_factory.mktemp("tiny_ast")), TinyASTSpec(), seed=0)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on loopback (free ports, credentials required), with a bucket."""
    from tests.s3_server import SeaweedS3

    server = SeaweedS3(str(tmp_path_factory.mktemp("seaweedfs"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
def machine_cache_dir(tmp_path_factory) -> str:
    """The per-machine cache root (checkpoint downloads, compiled graphs) for this test session,
    so tests never read or fill the user's ~/.cache/audio-labelling. Subprocesses inherit it."""
    path = str(tmp_path_factory.mktemp("machine_cache"))
    os.environ["AUDIO_LABELLING_CACHE_DIR"] = path
    return path


@pytest.fixture(scope="session")
def spark():
    """A local-mode Spark session (pyspark; Java 17 from Debian's packages, which .ci/run
    installs), shared by the reader tests."""
    if shutil.which("java") is None:
        pytest.fail("the Spark reader tests need Java 17+: apt-get install openjdk-17-jre-headless (.ci/run does)")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("audio-labelling-readers")
               .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
               .config("spark.driver.memory", "1g").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def labelled_archive(tmp_path_factory, tiny_checkpoint) -> dict:
    """The search and custom-class tests' archive (tests/search_corpus.py): 503 generated files
    labelled once with embeddings (run r1) and indexed. Tests that change it work on a copy."""
    from tests.search_corpus import labelled_archive_fixture

    return labelled_archive_fixture(tmp_path_factory, tiny_checkpoint)


@pytest.fixture(scope="session")
def cluster_corpus(s3_server, tiny_checkpoint):
    """Inputs (plain files and tar shards) and the tiny model on S3, shared by the runs on Beam's
    job service, Flink and Spark (tests/cluster_runs.py)."""
    from tests.cluster_runs import make_corpus

    return make_corpus(s3_server, tiny_checkpoint, "cluster")


@pytest.fixture(scope="session")
def direct_reference(cluster_corpus, s3_server):
    """The reference every distributed run is compared with: the same job on the DirectRunner
    (this process), its tables read back."""
    from tests.cluster_runs import job_args, launch, launcher_credentials, read_tables

    with launcher_credentials(s3_server):
        assert launch(job_args(cluster_corpus, s3_server, "direct")) == 0
    return read_tables(s3_server, cluster_corpus.output, "direct")


# Tests run on two xdist workers (pytest.ini): each worker is its own process with its own session
# fixtures. Tests that share an expensive session fixture go to one worker together, so it starts
# once; every other module stays on one worker, so its module fixtures run once.
SHARED_FIXTURE_GROUPS = ("labelled_archive", "direct_reference", "spark")


def pytest_collection_modifyitems(config, items):
    for item in items:
        group = next((name for name in SHARED_FIXTURE_GROUPS if name in item.fixturenames),
                     item.module.__name__)
        item.add_marker(pytest.mark.xdist_group(group))
