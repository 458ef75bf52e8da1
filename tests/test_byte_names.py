"""Any byte string a filesystem or a tar header can hold is a clip (issue 19, finding 6).

Names that are not UTF-8 (a local ``caf\\xe9.wav``, a tar member written with a latin-1 name)
are read, labelled and skipped by --skip_labelled like any other; they are recorded
percent-escaped (transforms/io/names.py), reversibly, the same way in every run."""
import io
import json
import os
import random
import tarfile
import uuid

import pytest

from pipeline.demo.audio import chirp, noise, tone
from pipeline.main import run
from tests.shard_corpus import audio_bytes
from transforms.elements import ClipSource, SourceRef
from transforms.io.names import name_bytes, record_name

WAV = audio_bytes("wav", tone(1.0, 16000, 440.0), 16000)
FLAC = audio_bytes("flac", noise(1.0, 22050, 4), 22050)
OGG = audio_bytes("ogg", chirp(1.0, 16000), 16000)


@pytest.mark.parametrize("raw, recorded", [
    (b"caf\xe9.wav", "caf%E9.wav"),
    (b"se\xf1al 100%.wav", "se%F1al 100%25.wav"),           # its % escaped too: reversible
    ("café 100%.wav".encode(), "café 100%.wav"),             # valid UTF-8: kept as it is
    (b"\xff\xfe/\xc3(.flac", "%FF%FE/%C3(.flac"),            # invalid sequences, byte by byte
    (b"plain.wav", "plain.wav"),
])
def test_names_are_recorded_as_utf8_or_percent_escaped_and_reversibly(raw, recorded):
    assert record_name(os.fsdecode(raw)) == recorded
    assert name_bytes(recorded) == raw
    recorded.encode("utf-8")   # what Beam's coders and Parquet take


def test_every_byte_string_round_trips():
    rng = random.Random(19)
    for _ in range(2000):
        raw = bytes(rng.choice(b"ab%/.\x00\x7f\x80\xc3\xa9\xe9\xed\xa0\xff") for _ in range(rng.randint(1, 12)))
        recorded = record_name(os.fsdecode(raw))
        recorded.encode("utf-8")
        assert name_bytes(recorded) == raw, raw


def latin1_shard(members) -> bytes:
    """A tar whose member names are written in latin-1 (as old tools on such systems write them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_non_utf8_names_on_a_local_disk_are_labelled_and_then_skipped(tiny_checkpoint, tmp_path):
    folder = os.fsencode(str(tmp_path / "in"))
    os.mkdir(folder)
    for raw, data in ((b"caf\xe9.wav", WAV), (b"d\xe9fect.wav", b"not audio" * 40), (b"ok.flac", FLAC),
                      (b"s\xe9rie.tar", latin1_shard([("señal.json", b'{"k": 1}'), ("señal.wav", OGG)]))):
        with open(os.path.join(folder, raw), "wb") as f:
            f.write(data)
    root = str(tmp_path / "in")
    out = str(tmp_path / "out")
    first = run(["--input", root, "--output", out, "--model", tiny_checkpoint, "--batch_size", "2",
                 "--run_id", "bytes1", "--max_error_fraction", "1.0"])
    clips = {r["clip_id"]: r for r in first.clips.to_pylist()}
    assert sorted(clips) == [f"{root}/caf%E9.wav", f"{root}/ok.flac", f"{root}/s%E9rie.tar#se%F1al.wav"]
    member = clips[f"{root}/s%E9rie.tar#se%F1al.wav"]
    assert member["member_name"] == "se%F1al.wav" and member["shard_uri"] == f"{root}/s%E9rie.tar"
    assert json.loads(member["meta"]) == {"k": 1}
    assert name_bytes(member["member_name"]) == "señal.wav".encode("latin-1")
    assert os.path.exists(name_bytes(f"{root}/caf%E9.wav"))      # the recorded id leads back to the file
    [error] = first.errors.to_pylist()
    assert error["source_uri"] == f"{root}/d%E9fect.wav" and error["stage"] == "decode"

    second = run(["--input", root, "--output", out, "--model", tiny_checkpoint, "--batch_size", "2",
                  "--run_id", "bytes2", "--skip_labelled", out, "--max_error_fraction", "1.0"])
    # The same ids again (stable), so everything labelled before is skipped; the broken file is retried.
    assert second.skipped == 3 and second.clips.num_rows == 0
    assert [r["source_uri"] for r in second.errors.to_pylist()] == [f"{root}/d%E9fect.wav"]


def test_a_latin1_member_name_on_object_storage(s3_server):
    """On SeaweedFS, without a whole run (the local test has one): the member of a shard read by
    ReadSources gets an escaped clip id, and the element passes Beam's coder, where the name
    used to fail the job."""
    from apache_beam.coders import FastPrimitivesCoder

    from transforms.read_sources import ReadSources

    fs = s3_server.filesystem()
    root = f"s3://{s3_server.bucket}/bytes-{uuid.uuid4().hex[:8]}"
    fs.pipe(f"{root}/s.tar".removeprefix("s3://"), latin1_shard([("año.wav", WAV), ("b.wav", FLAC)]))
    reader = ReadSources(s3_server.storage_options())
    reader.setup()
    clips = [c for c in reader.process(SourceRef(f"{root}/s.tar", "shard")) if isinstance(c, ClipSource)]
    assert [c.clip_id for c in clips] == [f"{root}/s.tar#a%F1o.wav", f"{root}/s.tar#b.wav"]
    assert name_bytes(clips[0].member_name) == "año.wav".encode("latin-1")
    for clip in clips:
        FastPrimitivesCoder().encode((clip.clip_id, clip))   # keyed by clip id, as Beam carries it


def test_an_input_that_is_not_utf8_and_matches_nothing_is_an_error_row(tmp_path):
    """The pattern itself is recorded as names are: an error row Beam's coder and Parquet take
    (it used to fail the job as the names did), naming the pattern escaped."""
    import pyarrow as pa
    from apache_beam.coders import FastPrimitivesCoder

    from transforms.elements import DiscoveryRequest, InputError
    from transforms.io.sources import Discovery
    from transforms.io.storage import Storage

    missing = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"nope_caf\xe9.wav"))
    [error] = list(Discovery(Storage(), DiscoveryRequest(inputs=(missing,))))
    assert isinstance(error, InputError) and error.error_type == "NoFilesMatched", error
    assert error.source_uri == f"{tmp_path}/nope_caf%E9.wav"
    assert "\udce9" not in error.message and "nope_caf%E9.wav" in error.message
    FastPrimitivesCoder().encode((error.source_uri, error.message))
    pa.array([error.source_uri, error.message])
