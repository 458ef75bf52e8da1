"""Shared fixtures. The protobuf backend must be chosen before anything imports Beam."""
from transforms.model.runtime_env import ensure_protobuf_python_backend

ensure_protobuf_python_backend()

import os  # noqa: E402
import tempfile  # noqa: E402

# The suite's per-machine cache (compiled graphs, CPU kernels) is its own, never the user's.
_TEST_CACHE = tempfile.TemporaryDirectory(prefix="audio_labelling_test_cache_")
os.environ["AUDIO_LABELLING_CACHE_DIR"] = _TEST_CACHE.name

import pytest  # noqa: E402

from pipeline.demo_checkpoint import TinyASTSpec, write_checkpoint  # noqa: E402


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
