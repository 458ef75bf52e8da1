"""--device auto and --precision on the machine the tests run on."""
import logging

import pytest

from pipeline.main import main
from transforms.mindspore_inference import load_runner, resolve_device, resolve_precision


def _available(target):
    import mindspore as ms

    try:
        return ms.hal.is_available(target)
    except Exception:
        return False


def test_auto_prefers_accelerators_and_logs(caplog):
    expected = "ascend" if _available("Ascend") else "gpu" if _available("GPU") else "cpu"
    with caplog.at_level(logging.INFO, logger="transforms.mindspore_inference"):
        assert resolve_device("auto") == expected
    assert any(f"--device auto: using {expected}" in r.getMessage() for r in caplog.records)
    assert resolve_device("cpu") == "cpu"


def test_half_precision_falls_back_to_fp32_on_cpu(caplog):
    with caplog.at_level(logging.WARNING, logger="transforms.mindspore_inference"):
        assert resolve_precision("cpu", "fp16") == "fp32"
    assert "fp16 is for GPU/Ascend" in caplog.text
    assert resolve_precision("gpu", "bf16") == "bf16"


def test_auto_device_runner_predicts(tiny_checkpoint):
    if resolve_device("auto") != "cpu":
        pytest.skip("this machine has an accelerator; the CPU path is covered elsewhere")
    runner = load_runner(tiny_checkpoint, "native", 2, device="auto", precision="fp16")
    logits, pooled = runner.predict(__import__("numpy").zeros((1, 1024, 128), "float32"))
    assert logits.shape == (1, 12) and pooled.shape == (1, 32)


def test_cli_refuses_half_precision_on_cpu(tmp_path, tiny_checkpoint, capsys):
    code = main(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--model", tiny_checkpoint,
                 "--device", "cpu", "--precision", "fp16"])
    assert code == 2 and "needs --device gpu or ascend" in capsys.readouterr().err
