"""WebDataset samples of many members sharing one key, on a real S3 server (SeaweedFS) and through
the whole job: streamed member by member, sidecars applied, --max_sample_bytes enforced."""
import io
import json
import tarfile
import tracemalloc
import uuid

import pytest

from pipeline.demo.audio import noise, tone
from pipeline.main import run
from tests.shard_corpus import audio_bytes, json_bytes, make_tar
from transforms.io.shards import ShardReader
from transforms.io.storage import Storage
from transforms.read_sources import SHARD_BLOCK_SIZE


@pytest.fixture(scope="module")
def s3_root(s3_server):
    return f"s3://{s3_server.bucket}/samples-{uuid.uuid4().hex[:8]}"


MEMBER = 1 << 20


def stream_from_s3(s3_server, uri, members):
    """Reads the shard as ReadSources does; (names, metas, shard bytes read at the first clip,
    traced peak memory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    s3_server.filesystem().pipe(uri.removeprefix("s3://"), buf.getvalue())
    del buf
    storage = Storage(s3_server.storage_options())
    fs, path = storage.fs_and_path(uri)
    fs.info(path)   # the client (botocore's models: ~20 MB) exists before memory is traced
    reader = ShardReader(uri, lambda: storage.open(uri, block_size=SHARD_BLOCK_SIZE), policy=storage.policy)
    first_at, names, metas = None, [], set()
    tracemalloc.start()
    try:
        for item in reader:
            if first_at is None:
                first_at = reader.stats.bytes_read
            names.append(item.member_name)
            metas.add(item.meta)
            del item
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return names, metas, first_at, peak


def test_a_shared_key_shard_on_s3_is_streamed_member_by_member(s3_server, s3_root):
    """40 x 1 MiB members of key spk01 read from S3: the first clip comes out after about one
    member, and traced memory stays within a few members of a shard whose members have
    distinct keys (what remains is the S3 read-ahead, the same for both)."""
    count = 40
    shared = [("spk01.json", json_bytes({"speaker": "spk01"}))] + [
        (f"spk01.utt{i:03d}.wav", bytes([i]) * MEMBER) for i in range(count)]
    distinct = [m for i in range(count) for m in ((f"{i:03d}.json", json_bytes({"speaker": "spk01"})),
                                                   (f"{i:03d}.wav", bytes([i]) * MEMBER))]
    names, metas, first_at, peak = stream_from_s3(s3_server, f"{s3_root}/spk.tar", shared)
    _, _, _, reference = stream_from_s3(s3_server, f"{s3_root}/distinct.tar", distinct)
    assert names == [f"spk01.utt{i:03d}.wav" for i in range(count)]
    assert metas == {'{"speaker": "spk01"}'}
    assert first_at < 3 * MEMBER, first_at
    assert peak < reference + 3 * MEMBER, (peak, reference)
    assert peak < count * MEMBER / 2, peak


def test_the_job_labels_shared_key_samples_and_refuses_what_is_past_max_sample_bytes(
        s3_server, s3_root, tiny_checkpoint):
    fs = s3_server.filesystem()
    utterances = [audio_bytes("wav", tone(0.5 + i / 10, 16000, 200.0 + 60 * i) + noise(0.5 + i / 10, 16000, i),
                              16000) for i in range(6)]
    fs.pipe(f"{s3_root.removeprefix('s3://')}/in/spk.tar", make_tar(
        [("spk01.json", json_bytes({"speaker": "spk01"}))] +
        [(f"spk01.utt{i:02d}.wav", data) for i, data in enumerate(utterances)]))
    # flac sorts before json: these wait for rec.json, and only two fit in --max_sample_bytes.
    takes = [audio_bytes("flac", noise(3.0, 16000, 10 + i), 16000) for i in range(3)]
    fs.pipe(f"{s3_root.removeprefix('s3://')}/in/rec.tar", make_tar(
        [(f"rec.{i:04d}.flac", data) for i, data in enumerate(takes)] + [("rec.json", json_bytes({"take": "all"}))]))
    limit = len(takes[0]) + len(takes[1]) + 1
    assert max(map(len, utterances + takes)) < limit    # each member alone fits
    summary = run(["--input", f"{s3_root}/in/*.tar", "--output", f"{s3_root}/out", "--model", tiny_checkpoint,
                   "--batch_size", "4", "--run_id", "samples", "--max_sample_bytes", str(limit),
                   "--storage_options", json.dumps(s3_server.storage_options()), *s3_server.beam_s3_args()])
    clips = {r["member_name"]: r for r in summary.clips.to_pylist()}
    assert sorted(clips) == sorted([f"spk01.utt{i:02d}.wav" for i in range(6)] + ["rec.0000.flac", "rec.0001.flac"])
    assert {clips[f"spk01.utt{i:02d}.wav"]["meta"] for i in range(6)} == {'{"speaker": "spk01"}'}
    assert clips["rec.0000.flac"]["meta"] == clips["rec.0001.flac"]["meta"] == '{"take": "all"}'
    [error] = summary.errors.to_pylist()
    assert (error["member_name"], error["stage"], error["error_type"]) == ("rec.0002.flac", "read", "SampleTooLarge")
    assert f"--max_sample_bytes {limit}" in error["message"]
    assert summary.discovered == 9
