"""--device auto and --precision on the machine the tests run on; the device each worker process takes."""
import glob
import logging
import os

import pytest

from pipeline.main import main
from transforms import mindspore_inference
from transforms.mindspore_inference import (WORKER_ID_ENV, choose_device_id, load_runner, process_index,
                                            resolve_device, resolve_precision)


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


# ---- which accelerator a worker process takes (pure choice; no accelerator needed)

def test_worker_processes_take_devices_round_robin_by_beam_worker_id():
    direct = [choose_device_id(4, f"worker_{i}", None)[0] for i in range(8)]
    assert direct == [0, 1, 2, 3, 0, 1, 2, 3]
    # Beam's SDK container boot: the main id and its siblings (Dataflow), one per process.
    dataflow = ["sdk-0-0", "sdk-0-0_sibling_1", "sdk-0-0_sibling_2", "sdk-0-0_sibling_3"]
    assert [choose_device_id(4, w, None)[0] for w in dataflow] == [0, 1, 2, 3]
    assert [choose_device_id(2, w, None)[0] for w in ("1-1", "1-2", "1-3")] == [0, 1, 0]
    assert choose_device_id(1, "worker_7", None)[0] == 0
    assert choose_device_id(0, "worker_7", None)[0] == 0   # a count of 0 never divides by zero


def test_a_visible_device_list_limits_the_choice():
    # A container or runner that hands each process one device: it is device 0 of that process.
    device, why = choose_device_id(8, "worker_5", "3")
    assert device == 0 and "only device visible" in why
    # A list of several: round-robin over the visible ones only (MindSpore renumbers them 0..n-1).
    assert [choose_device_id(8, f"worker_{i}", "4,5,6")[0] for i in range(4)] == [0, 1, 2, 0]
    # An empty variable means no restriction.
    assert choose_device_id(4, "worker_2", "")[0] == 2


def test_without_a_worker_id_the_first_device_is_used_and_the_reason_given():
    device, why = choose_device_id(4, None, None)
    assert device == 0 and "WORKER_ID" in why
    assert process_index(None) is None and process_index("no digits") is None


def test_directrunner_worker_processes_get_distinct_process_indices(tmp_path):
    # What choose_device_id reads, as Beam 2.77's DirectRunner sets it in its worker processes.
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    out = str(tmp_path / "ids")
    options = PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=2",
                               "--direct_running_mode=multi_processing"])
    with beam.Pipeline(options=options) as p:
        (p | beam.Create(list(range(200))) | beam.Reshuffle()
         | beam.Map(lambda _: f"{os.getpid()} {os.environ.get('WORKER_ID')}") | beam.Distinct()
         | beam.io.WriteToText(out))
    seen = dict(line.split() for path in glob.glob(out + "*") for line in open(path))
    assert len(seen) == 2, seen                    # two processes did work
    assert sorted(choose_device_id(2, w, None)[0] for w in seen.values()) == [0, 1]


def test_cpu_runs_never_choose_an_accelerator(tiny_checkpoint, monkeypatch, caplog):
    monkeypatch.setenv(WORKER_ID_ENV, "worker_3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "not,a,list")
    with caplog.at_level(logging.INFO, logger="transforms.mindspore_inference"):
        runner = load_runner(tiny_checkpoint, "native", 2, device="cpu")
    assert runner.predict(__import__("numpy").zeros((1, 1024, 128), "float32"))[0].shape == (1, 12)
    assert mindspore_inference._process_device == {}
    assert "worker process" not in caplog.text
