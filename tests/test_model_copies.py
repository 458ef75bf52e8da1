"""--model_copies: models shared by a machine's worker processes. (Which device a process takes:
tests/test_device.py.)"""
from pipeline.main import run
from tests.audio_corpus import write_good


def test_run_with_two_model_copies_shared_by_two_worker_processes(tmp_path, tiny_checkpoint):
    audio = tmp_path / "audio"
    good = write_good(str(audio))
    summary = run(["--input", str(audio), "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                   "--model_copies", "2", "--direct_num_workers", "2",
                   "--direct_running_mode", "multi_processing", "--batch_size", "2"])
    assert sorted(summary.clips.column("source_uri").to_pylist()) == sorted(good)
    assert summary.errors.num_rows == 0
