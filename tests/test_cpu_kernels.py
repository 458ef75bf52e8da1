"""The AVX2 CPU kernels (transforms/model/cpu_kernels.py) against MindSpore's own kernels."""
import numpy as np
import pytest

from pipeline.demo.checkpoint import TinyASTSpec
from transforms.model import cpu_kernels
from transforms.model.ast_native import load_native_ast

pytestmark = pytest.mark.skipif(cpu_kernels.unavailable_reason() is not None,
                                reason=f"custom kernels unavailable: {cpu_kernels.unavailable_reason()}")


def test_library_is_built_into_the_machine_cache():
    path = cpu_kernels.kernel_library()
    assert path.endswith("ast_cpu_kernels.so")
    assert f"{'kernels'}" in path.split("/")


def test_model_with_custom_kernels_matches_mindspore_kernels(tiny_checkpoint):
    spec = TinyASTSpec()
    x = np.random.default_rng(5).standard_normal((3, spec.max_length, spec.num_mel_bins)).astype(np.float32) * 3
    custom = load_native_ast(tiny_checkpoint, batch_size=3, cpu_kernels=True, compile_cache=False)
    plain = load_native_ast(tiny_checkpoint, batch_size=3, cpu_kernels=False, compile_cache=False)
    assert custom.cpu_kernels is not None and plain.cpu_kernels is None
    lc, pc = custom.predict(x)
    lp, pp = plain.predict(x)
    np.testing.assert_allclose(lc, lp, atol=1e-4, rtol=0)
    np.testing.assert_allclose(pc, pp, atol=1e-4, rtol=0)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv(cpu_kernels.DISABLE_ENV, "0")
    assert cpu_kernels._unavailable_reason() == f"{cpu_kernels.DISABLE_ENV}=0"
