"""Discovery of plain files and shards from patterns and manifests (memory:// and local paths)."""
import gzip
import io
import json
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.elements import DiscoveryRequest, InputError, SourceRef
from transforms.io.sources import Discovery, expand_pattern, is_shard, iter_manifest, resolve_entry
from transforms.io.storage import Storage


@pytest.fixture
def mem():
    """A fresh folder on fsspec's in-memory filesystem."""
    root = f"memory://t-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    for name in ("a.wav", "sub/b.flac", "sub/deeper/c.ogg", "sub/notes.txt", "shards/s-0.tar",
                 "shards/s-1.tar.gz", "shards/s-2.tgz"):
        fs.pipe(f"{root}/{name}", b"x")
    yield root, fs
    fs.rm(root, recursive=True)


def uris(sources):
    return [s.uri.rsplit("/", 1)[-1] for s in sources]


def test_shard_names():
    assert is_shard("s3://b/x.tar") and is_shard("X.TGZ") and is_shard("https://h/a.tar.gz?sig=1")
    assert not is_shard("a.tar.bz2.wav") and not is_shard("a.wav")


def test_patterns_folders_and_files(mem):
    root, _ = mem
    storage = Storage()
    everything = expand_pattern(storage, f"{root}/**")
    assert sorted(uris(everything)) == sorted(
        ["a.wav", "b.flac", "c.ogg", "notes.txt", "s-0.tar", "s-1.tar.gz", "s-2.tgz"])
    assert {s.kind for s in everything if s.uri.endswith(("tar", "gz", "tgz"))} == {"shard"}
    assert uris(expand_pattern(storage, f"{root}/**/*.flac")) == ["b.flac"]
    # a folder: its audio files and shards, by extension, not the notes
    assert sorted(uris(expand_pattern(storage, f"{root}/sub"))) == ["b.flac", "c.ogg"]
    assert expand_pattern(storage, f"{root}/a.wav") == [SourceRef(f"memory:///{root[9:]}/a.wav", "file")]
    assert expand_pattern(storage, f"{root}/nothing*") == []


def test_local_paths_stay_plain_paths(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"1")
    (tmp_path / "y.tar").write_bytes(b"1")
    found = expand_pattern(Storage(), str(tmp_path))
    assert found == [SourceRef(str(tmp_path / "x.wav"), "file"), SourceRef(str(tmp_path / "y.tar"), "shard")]
    assert expand_pattern(Storage(), f"file://{tmp_path}/*.wav") == [SourceRef(str(tmp_path / "x.wav"), "file")]


def test_relative_manifest_entries_resolve_against_the_manifest_folder():
    assert resolve_entry("s3://b/lists/m.txt", "clips/a.wav") == "s3://b/lists/clips/a.wav"
    assert resolve_entry("s3://b/lists/m.txt", "./a.wav") == "s3://b/lists/a.wav"
    assert resolve_entry("s3://b/lists/m.txt", "../x/a.wav") == "s3://b/x/a.wav"
    assert resolve_entry("lists/m.txt", "a.wav") == "lists/a.wav"
    assert resolve_entry("s3://b/lists/m.txt", "gs://o/a.wav") == "gs://o/a.wav"
    assert resolve_entry("/data/m.txt", "/abs/a.wav") == "/abs/a.wav"


def _parquet(values) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"uri": values, "label": ["x"] * len(values)}), buf)
    return buf.getvalue()


@pytest.mark.parametrize("name,content", [
    ("m.txt", b"# a comment\ns3://b/1.wav\n\nrel/2.wav\n   \ns3://b/3.tar\n"),
    ("m.txt.gz", gzip.compress(b"s3://b/1.wav\nrel/2.wav\ns3://b/3.tar\n", mtime=0)),   # stable test id
    ("m.csv", b"uri,label\ns3://b/1.wav,dog\nrel/2.wav,cat\ns3://b/3.tar,\n"),
    ("m.jsonl", b'{"uri": "s3://b/1.wav"}\n{"uri": "rel/2.wav", "n": 2}\n\n{"uri": "s3://b/3.tar"}\n'),
    ("m.parquet", _parquet(["s3://b/1.wav", "rel/2.wav", "s3://b/3.tar"])),
])
def test_manifest_formats(mem, name, content):
    root, fs = mem
    fs.pipe(f"{root}/lists/{name}", content)
    entries = [uri for _, uri, problem in iter_manifest(Storage(), f"{root}/lists/{name}")]
    assert entries == ["s3://b/1.wav", f"{root}/lists/rel/2.wav", "s3://b/3.tar"]


def test_unusable_manifest_entries_are_reported_one_by_one(mem):
    root, fs = mem
    fs.pipe(f"{root}/bad.jsonl", b'{"uri": "s3://b/ok.wav"}\nnot json\n{"path": "x"}\n[1]\n')
    got = list(iter_manifest(Storage(), f"{root}/bad.jsonl"))
    assert [(n, uri) for n, uri, _ in got] == [(1, "s3://b/ok.wav"), (2, None), (3, None), (4, None)]
    assert got[1][2].startswith("line 2: not JSON") and got[2][2] == "line 3: no uri"
    fs.pipe(f"{root}/nocol.csv", b"path\nx.wav\n")
    with pytest.raises(ValueError, match="no 'uri' column"):
        list(iter_manifest(Storage(), f"{root}/nocol.csv"))


def test_discovery_takes_each_uri_once_and_reports_what_matched_nothing(mem):
    root, fs = mem
    fs.pipe(f"{root}/m.txt", f"{root}/a.wav\nshards/s-0.tar\nnosuchproto://x/y.wav\n{root}/missing.wav\n".encode())
    request = DiscoveryRequest(
        inputs=(f"{root}/a.wav", f"{root}/shards/*", f"{root}/no-such-*"),
        manifests=(f"{root}/m.txt", f"{root}/absent.txt", f"{root}/m.yaml"))
    discovery = Discovery(Storage(), request)
    items = list(discovery)
    sources = [i for i in items if isinstance(i, SourceRef)]
    errors = [i for i in items if isinstance(i, InputError)]
    assert uris(sources) == ["a.wav", "s-0.tar", "s-1.tar.gz", "s-2.tgz", "missing.wav"]
    assert discovery.duplicates == 2    # a.wav and s-0.tar named twice
    assert [(e.source_uri.rsplit("/", 1)[-1], e.error_type) for e in errors] == [
        ("no-such-*", "NoFilesMatched"), ("y.wav", "ValueError"), ("absent.txt", "FileNotFoundError"),
        ("m.yaml", "ManifestError")]
    assert json.dumps([e.message for e in errors])   # messages are plain text
