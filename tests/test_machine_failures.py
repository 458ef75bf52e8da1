"""Errors of the machine fail the job everywhere, not only in inference (issue 19, finding 8):
out of memory and storage that still fails after its retries are raised while discovering,
reading shards and decoding files, never turned into error rows; and a model that fails on
every window fails the job whatever the batch size.

The store is real (a loopback HTTP server that cuts bodies short, a closed port). Running out of
memory cannot be had on demand, so there a thin double raises MemoryError where numpy or a read
would (as in tests/test_inference_failures.py)."""
import contextlib
import io
import os
import socket

import numpy as np
import pytest

import transforms.audio.windowing
from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import run
from pipeline.runs.layout import manifest_path
from pipeline.runs.publish import finished_runs
from tests.http_server import FileServer
from tests.shard_corpus import audio_bytes, make_tar
from tests.test_inference_failures import CLIP, Wrapped, windows
from transforms import mindspore_inference
from transforms.audio.fbank import FeatureConfig
from transforms.elements import ClipSource, DiscoveryRequest, FeatureWindow, InputError
from transforms.featurize import DecodeAndFeaturize
from transforms.io.job_failures import is_machine_failure
from transforms.io.shards import ShardReader
from transforms.io.sources import Discovery
from transforms.io.storage import RetryPolicy, Storage
from transforms.mindspore_inference import MAX_CONSECUTIVE_FAILED_WINDOWS, MindSporeASTModelHandler, ModelFailure

NO_WAIT = RetryPolicy(attempts=2, base_delay=0.0)
WAV = audio_bytes("wav", tone(3.0, 16000, 440.0) + noise(3.0, 16000, 1), 16000)   # 96 KB


def decode(source):
    return list(DecodeAndFeaturize(FeatureConfig()).process(source))


@pytest.fixture(scope="module")
def cutting_server():
    """/a.wav whole; /cut.wav's bodies end after 20 000 of its 96 044 bytes, every time."""
    with FileServer({"/a.wav": WAV, "/cut.wav": WAV}, cut_after={"/cut.wav": 20000}) as server:
        yield server


# libsndfile's read callback prints the error it swallows; that is the point of these two tests.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_connection_lost_midway_through_a_file_is_raised_not_a_row_or_a_short_clip(cutting_server):
    """libsndfile reads through a callback that swallows the error (cffi prints it, returns 0):
    the clip would be labelled as cut short. The DoFn raises the storage error instead."""
    whole = decode(ClipSource.of(cutting_server.url("/a.wav")))
    assert whole[-1].tag == "outcomes" and whole[-1].value[1].error is None
    with pytest.raises(Exception) as failure:
        decode(ClipSource.of(cutting_server.url("/cut.wav")))
    assert type(failure.value).__name__ == "ClientPayloadError", repr(failure.value)
    assert is_machine_failure(failure.value)


class RunsOutOfMemory(io.BytesIO):
    """A clip whose read past the header fails as an allocation would (test double)."""

    def read(self, size=-1):
        if self.tell() > 4096:
            raise MemoryError("out of memory (test double)")
        return super().read(size)

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_out_of_memory_while_reading_a_file_is_raised(monkeypatch):
    @contextlib.contextmanager
    def open_clip(self, source):
        yield RunsOutOfMemory(WAV)

    monkeypatch.setattr(Storage, "open_clip", open_clip)
    with pytest.raises(MemoryError):
        decode(ClipSource(clip_id="m.wav", source_uri="m.wav", data=WAV))


def test_out_of_memory_in_fbank_is_raised_though_the_decoder_wraps_it(monkeypatch):
    def fbank(*args, **kwargs):
        raise MemoryError("numpy could not allocate the spectrogram (test double)")

    monkeypatch.setattr(transforms.audio.windowing, "ast_input_features", fbank)
    with pytest.raises(Exception) as failure:
        decode(ClipSource(clip_id="m.wav", source_uri="m.wav", data=WAV))
    assert isinstance(failure.value.__cause__, MemoryError) or isinstance(failure.value, MemoryError)


def test_out_of_memory_while_reading_a_shard_is_raised_not_a_shard_row():
    data = make_tar([("a.wav", WAV), ("b.wav", WAV)])
    reader = ShardReader("mem://s.tar", lambda: RunsOutOfMemory(data), policy=NO_WAIT)
    with pytest.raises(MemoryError):
        list(reader)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_store_that_cannot_be_reached_at_discovery_is_raised_not_a_discover_row():
    request = DiscoveryRequest(inputs=(f"http://127.0.0.1:{_closed_port()}/audio/a.wav",))
    with pytest.raises(Exception) as failure:
        list(Discovery(Storage(policy=NO_WAIT), request))
    assert is_machine_failure(failure.value), repr(failure.value)
    # A pattern that is simply wrong stays a row.
    [error] = list(Discovery(Storage(policy=NO_WAIT), DiscoveryRequest(inputs=("/no/such/dir/*.wav",))))
    assert isinstance(error, InputError) and error.error_type == "NoFilesMatched"


def test_a_run_whose_input_store_keeps_failing_fails_and_publishes_nothing(cutting_server, tiny_checkpoint,
                                                                           tmp_path):
    manifest = tmp_path / "inputs.txt"
    manifest.write_text(cutting_server.url("/a.wav") + "\n" + cutting_server.url("/cut.wav") + "\n")
    out = str(tmp_path / "out")
    with pytest.raises(Exception) as failure:
        run(["--input_manifest", str(manifest), "--output", out, "--model", tiny_checkpoint,
             "--batch_size", "2", "--run_id", "cut", "--max_error_fraction", "1.0"])
    assert "payload is not completed" in str(failure.value), repr(failure.value)
    assert finished_runs(out) == [] and not os.path.exists(manifest_path(out, "cut"))


# ---------------------------------------------------------------- a model failing on every window

@pytest.fixture(scope="module")
def real_model(tiny_checkpoint):
    return mindspore_inference.load_runner(tiny_checkpoint, "native", batch_size=1)


def _always(features):
    raise ValueError("unexpected input")


def test_a_model_failing_every_window_one_per_batch_is_raised_after_a_streak(real_model):
    handler = MindSporeASTModelHandler("unused", batch_size=1)
    model = Wrapped(real_model, _always)
    batches = [[w] for w in windows(MAX_CONSECUTIVE_FAILED_WINDOWS)]
    for batch in batches[:-1]:   # rows until then: a few windows the model rejects are inputs' faults
        [result] = handler.run_inference(batch, model)
        assert isinstance(result.inference, ValueError)
    with pytest.raises(ModelFailure, match=f"failed on {MAX_CONSECUTIVE_FAILED_WINDOWS} windows in a row"):
        handler.run_inference(batches[-1], model)


def test_a_scored_window_ends_the_streak(real_model):
    handler = MindSporeASTModelHandler("unused", batch_size=1)
    marked = windows(1, seed=7)[0]

    def reject_unmarked(features):
        if not np.array_equal(features[0], marked.features):
            raise ValueError("unexpected input")

    model = Wrapped(real_model, reject_unmarked)
    for i in range(3 * MAX_CONSECUTIVE_FAILED_WINDOWS):
        batch = [marked] if i % (MAX_CONSECUTIVE_FAILED_WINDOWS - 1) == 0 else [windows(1, seed=i)[0]]
        handler.run_inference(batch, model)   # never raises: a window scores before each streak ends
    # Inputs refused before the model is called (NaN) are no evidence against the model.
    nan = FeatureWindow(CLIP, 0, 0.0, 10.24, np.full((1024, 128), np.nan, np.float32))
    for _ in range(2 * MAX_CONSECUTIVE_FAILED_WINDOWS):
        assert isinstance(handler.run_inference([nan], model)[0].inference, ValueError)


def test_a_run_with_batch_size_1_and_a_broken_model_fails_and_publishes_nothing(tiny_checkpoint, tmp_path,
                                                                               monkeypatch):
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(MAX_CONSECUTIVE_FAILED_WINDOWS + 2):   # one window each
        write_audio(str(audio / f"c{i:02d}.wav"), tone(0.5, 16000, 200.0 + 30 * i), 16000)
    real_load = mindspore_inference.load_runner
    monkeypatch.setattr(mindspore_inference, "load_runner",
                        lambda *a, **k: Wrapped(real_load(*a, **k), _always))
    out = str(tmp_path / "out")
    with pytest.raises(ModelFailure):
        run(["--input", str(audio), "--output", out, "--model", tiny_checkpoint, "--batch_size", "1",
             "--run_id", "broken", "--max_error_fraction", "1.0"])
    assert finished_runs(out) == [] and not os.path.exists(manifest_path(out, "broken"))
