"""--model_copies: models shared by a machine's worker processes, one device each."""
import multiprocessing
import uuid

from pipeline.main import run
from tests.audio_corpus import write_good
from transforms.mindspore_inference import claim_device_id


def _claim(args):
    key, count = args
    return claim_device_id(key, count)


def test_copies_loaded_in_different_processes_take_different_devices():
    key = f"test-{uuid.uuid4().hex}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.map(_claim, [(key, 4)] * 4)
    assert sorted(ids) == [0, 1, 2, 3]
    # More copies than devices wrap round-robin; another run's count is its own.
    assert [claim_device_id(key, 4) for _ in range(4)] == [0, 1, 2, 3]
    assert claim_device_id(f"other-{uuid.uuid4().hex}", 4) == 0
    assert claim_device_id(key, 1) == 0


def test_run_with_two_model_copies_shared_by_two_worker_processes(tmp_path, tiny_checkpoint):
    audio = tmp_path / "audio"
    good = write_good(str(audio))
    summary = run(["--input", str(audio), "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                   "--model_copies", "2", "--direct_num_workers", "2",
                   "--direct_running_mode", "multi_processing", "--batch_size", "2"])
    assert sorted(summary.clips.column("source_uri").to_pylist()) == sorted(good)
    assert summary.errors.num_rows == 0
