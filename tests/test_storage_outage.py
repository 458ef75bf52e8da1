"""Object storage dies in the middle of a run (a real SeaweedFS, SIGKILLed by the test).

The run must fail (raise) within bounded time, publish nothing (no ``_MANIFEST.json``, no
table folder, not listed by ``finished_runs``), and after the server comes back on the same
data folder, a rerun of the same run id must produce exactly one row per input, with nothing
left over from the failed attempt.

Where the server dies is chosen by an in-process trigger, not by timing: the DirectRunner
runs in this process, so the test wraps one product (or Beam) function and kills the server
from inside it, at a point that is the same on every run:

* ``reading``: when ``Storage.open`` is called for the third of four shards. Discovery
  (listing) and two shards are read; their clips went on, fused, to decoding and scoring.
  Reads from here on are refused; after the retries of ``transforms/io/storage.py`` and of the
  shard reader the read fails the run (an error of the machine, transforms/io/job_failures.py:
  never shard error rows that would balance the accounting).
* ``committing``: when Beam's file sink starts finalising its first table (``pre_finalize``).
  All rows are computed and temporary Parquet files are already on S3 under the run prefix,
  nothing is renamed yet; the commit then fails. The temporary files survive the restart, so
  the rerun's publication must clear them (``pipeline/publish.retire_other_attempts``).

Retries stay at their defaults (this project's 4 tries and shard resumes, s3fs's 5, Beam's 7
per S3 call of its sink), with two changes that keep the file near a minute without changing
what is retried or how often:

* botocore's own per-request retries are turned down with the standard ``AWS_MAX_ATTEMPTS=1``
  (with its default 5 attempts each refused request takes ~20 s to give up, multiplied by
  every layer above it);
* Beam's backoff clock (``apache_beam.utils.retry.Clock.sleep``) records the pauses it asks
  for instead of sleeping them: its S3 filesystem retries a refused ``list`` 7 times from 5 s,
  doubling, so a commit-time outage really takes ~10-16 minutes to fail. The test reports the
  pauses asked for; they must be finite, i.e. the retries must run out.

A hang is caught by running the failing run in a thread with a generous join timeout: not a
timing assertion; a run that never ends is the defect this guards against.
"""
import json
import re
import threading
import uuid

import pyarrow.parquet as pq
import pytest
from apache_beam.io import filebasedsink
from apache_beam.utils import retry as beam_retry

import transforms.io.storage
from pipeline.demo.audio import noise, tone
from pipeline.main import run
from pipeline.runs.publish import finished_runs, read_manifest
from pipeline.runs.layout import MANIFEST_NAME, published_table_dir
from tests.s3_server import SeaweedS3
from tests.shard_corpus import audio_bytes, make_tar

HANG_LIMIT_S = 300      # a failing run takes ~10 s here; only a hang gets near this


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own server: it gets killed, so it cannot be the session's shared one."""
    s3 = SeaweedS3(str(tmp_path_factory.mktemp("seaweedfs-outage"))).start()
    try:
        yield s3
    finally:
        s3.kill()   # its data is thrown away; no graceful stop needed


@pytest.fixture(scope="module")
def corpus(server):
    """4 shards of 2 audio members each, one of them corrupt, plus a non-audio member."""
    fs = server.filesystem()
    root = f"{server.bucket}/outage-{uuid.uuid4().hex[:8]}"
    good, corrupt = set(), set()
    for i in range(4):
        uri = f"s3://{root}/in/shard-{i}.tar"
        members = [(f"{i}-a.wav", audio_bytes("wav", tone(1.0, 16000, 300.0 + 50 * i), 16000)),
                   (f"{i}-a.txt", b"a transcript"),
                   (f"{i}-b.flac", audio_bytes("flac", noise(1.0, 22050, i), 22050))]
        if i == 1:
            members[2] = ("1-b.flac", b"fLaC" + bytes(3000))
            corrupt.add(f"{uri}#1-b.flac")
        else:
            good.add(f"{uri}#{i}-b.flac")
        good.add(f"{uri}#{i}-a.wav")
        fs.pipe(uri.removeprefix("s3://"), make_tar(members))
    return f"s3://{root}", good, corrupt


def _kill_on_third_shard_open(server, monkeypatch, fired: list):
    original = transforms.io.storage.Storage.open
    opened = []

    def open_(self, url, *args, **kwargs):
        if url.endswith(".tar") and url not in opened:
            opened.append(url)
            if len(opened) == 3 and not fired:
                fired.append(f"reading: {opened[:2]} read, killed opening {url}")
                server.kill()
        return original(self, url, *args, **kwargs)

    monkeypatch.setattr(transforms.io.storage.Storage, "open", open_)


def _kill_on_first_commit(server, monkeypatch, fired: list):
    original = filebasedsink.FileBasedSink.pre_finalize

    def pre_finalize(self, init_result, writer_results):
        if not fired:
            fired.append(f"committing: temp files of {self.file_path_prefix} written, killed")
            server.kill()
        return original(self, init_result, writer_results)

    monkeypatch.setattr(filebasedsink.FileBasedSink, "pre_finalize", pre_finalize)


def _run_guarded(argv) -> BaseException | None:
    """run(argv) in a thread; the exception it raised (None if it returned). Fails on a hang."""
    outcome = {}

    def target():
        try:
            run(argv)
            outcome["error"] = None
        except BaseException as e:   # noqa: BLE001 - handed to the test
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT_S)
    assert not thread.is_alive(), f"the run still had not ended {HANG_LIMIT_S} s after the outage"
    return outcome["error"]


def _objects(fs, prefix: str) -> list[str]:
    return sorted(fs.find(prefix.removeprefix("s3://")))


@pytest.mark.parametrize("kill_point", ["reading", "committing"])
def test_outage_publishes_nothing_and_a_rerun_of_the_same_run_id_is_exact(
        server, corpus, tiny_checkpoint, monkeypatch, kill_point):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    root, good, corrupt = corpus
    output, run_id = f"{root}/out-{kill_point}", f"nightly-{kill_point}"
    argv = ["--input", f"{root}/in/*.tar", "--output", output, "--model", tiny_checkpoint,
            "--batch_size", "2", "--top_k", "2", "--run_id", run_id,
            "--storage_options", json.dumps(server.storage_options()), *server.beam_s3_args()]
    fired: list[str] = []
    beam_pauses: list[float] = []
    with monkeypatch.context() as patch:
        patch.setattr(beam_retry.Clock, "sleep", lambda self, seconds: beam_pauses.append(seconds))
        (_kill_on_third_shard_open if kill_point == "reading" else _kill_on_first_commit)(
            server, patch, fired)
        error = _run_guarded(argv)
    assert fired, "the trigger never fired: the outage did not happen mid-run"
    assert server.process is None   # it really is down
    assert error is not None, "the run claimed success with its output store down"
    assert "connect" in str(error).lower(), repr(error)
    print(f"{fired[0]}; Beam's S3 retries asked for {len(beam_pauses)} pauses, "
          f"{sum(beam_pauses):.0f} s in all")

    server.restart()
    fs = server.filesystem()
    options = server.storage_options()
    bare = output.removeprefix("s3://")
    left = [p.removeprefix(bare + "/") for p in _objects(fs, output)]
    assert not [p for p in left if p.endswith(MANIFEST_NAME)], left
    assert read_manifest(output, run_id, options) is None
    assert run_id not in finished_runs(output, options)
    # The failed attempt wrote only inside its own folder: no table folder exists.
    assert all(p.startswith(f"_runs/{run_id}/") for p in left), left
    if kill_point == "committing":   # the failed commit left temporary table files behind
        assert any("beam-temp" in p for p in left), left

    summary = run(argv)   # same run id, store back up, trigger gone

    assert finished_runs(output, options) == [run_id]
    manifest = read_manifest(output, run_id, options)
    assert manifest["counts"]["discovered"] == len(good) + len(corrupt) == 8
    tables = {}
    for table in ("clips", "errors", "segments"):
        files = fs.glob(f"{published_table_dir(output, run_id, table).removeprefix('s3://')}/*.parquet")
        tables[table] = [r for f in files for r in pq.read_table(f, filesystem=fs).to_pylist()]
    clip_ids = [r["clip_id"] for r in tables["clips"]]
    error_ids = [r["clip_id"] for r in tables["errors"]]
    assert sorted(clip_ids) == sorted(good)           # each exactly once, no duplicate
    assert sorted(error_ids) == sorted(corrupt)       # a decode error, not an outage leftover
    assert [r["stage"] for r in tables["errors"]] == ["decode"]
    assert {r["run_id"] for r in tables["clips"] + tables["errors"]} == {run_id}
    assert summary.clips.num_rows + summary.errors.num_rows == summary.discovered == 8
    assert summary.members_ignored == 4
    # Nothing from the failed attempt survives (its folder, temporary files and lease included):
    # only the published files, the manifest and the published attempt's statistics.
    final = [p.removeprefix(bare + "/") for p in _objects(fs, output)]
    attempt = re.escape(manifest["attempt"])
    rid = re.escape(run_id)
    assert all(re.fullmatch(rf"(clips|errors|segments)/run_id={rid}/part-{attempt}-\d{{5}}-of-\d{{5}}\.parquet", p)
               or re.fullmatch(rf"_runs/{rid}/{attempt}/_stats/shards/part-\d{{5}}-of-\d{{5}}\.parquet", p)
               or p in (f"_runs/{run_id}/{MANIFEST_NAME}", f"_runs/{run_id}/{manifest['attempt']}/_stats/summary.json")
               for p in final), final
    assert {p.split("/")[0] for p in final} == {"clips", "errors", "segments", "_runs"}
    assert not [p for p in _objects(fs, output) if "beam-temp" in p or p.endswith(".tmp")]
