"""Shared fixtures. The protobuf backend must be chosen before anything imports Beam."""
from pipeline.runtime_env import ensure_protobuf_python_backend

ensure_protobuf_python_backend()

import pytest  # noqa: E402

from pipeline.demo_checkpoint import TinyASTSpec, write_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A small random AST in HF layout: 1024 frames, 128 mel bins, 12 labels."""
    return write_checkpoint(str(tmp_path_factory.mktemp("tiny_ast")), TinyASTSpec(), seed=0)
