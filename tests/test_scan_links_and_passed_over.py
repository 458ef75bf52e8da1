"""Directory scans follow symlinks and count what they pass over (issue 19, finding 7).

fsspec lists a local symlink as type "other": links to audio (git-annex and DVC trees are made
of them) used to vanish, and files that are not audio left no trace. Now links to files are
taken (judged by the link's own name), links to directories walked (each real directory once,
so loops end), dangling links named like audio become error rows, and everything passed over
is counted by extension in the summary and the manifest."""
import json
import os
import uuid

import pytest

from pipeline.demo.audio import tone
from pipeline.main import run
from pipeline.runs.layout import manifest_path
from tests.shard_corpus import audio_bytes, make_tar
from transforms.elements import DiscoveryRequest, SourceRef
from transforms.io.sources import DIRECTORY_LINK_WALKED, SPECIAL, Discovery, expand_pattern
from transforms.io.storage import Storage

WAV = audio_bytes("wav", tone(1.0, 16000, 440.0), 16000)


@pytest.fixture
def linked_tree(tmp_path):
    """annex/ holds the content; audio/ is what the user points at: links and real files mixed."""
    annex, audio = tmp_path / "annex", tmp_path / "audio"
    (annex / "objects").mkdir(parents=True)
    (annex / "objects" / "SHA256E-s1--a.wav").write_bytes(WAV)
    (annex / "objects" / "b-content").write_bytes(WAV)          # DVC-style: no extension
    (annex / "more").mkdir()
    (annex / "more" / "c.wav").write_bytes(WAV)
    audio.mkdir()
    (audio / "real.wav").write_bytes(WAV)
    os.symlink(annex / "objects" / "SHA256E-s1--a.wav", audio / "a.wav")
    os.symlink(annex / "objects" / "b-content", audio / "b.wav")   # judged by the link's name
    os.symlink(annex / "more", audio / "more")                      # a linked directory: walked
    os.symlink(annex / "more", audio / "more_again")                # the same tree again: once
    os.symlink(audio, audio / "loop")                               # a loop: passed over
    os.symlink(tmp_path / "nowhere.wav", audio / "dangling.wav")    # an input that cannot be read
    (audio / "notes.txt").write_text("hello")
    (audio / "cover.pdf").write_bytes(b"\0" * 10)   # (.m4a and .mp4 are audio now: FFmpeg reads them)
    (audio / "PHOTO.JPG").write_bytes(b"\0" * 10)
    (audio / "README").write_text("no extension")
    os.mkfifo(audio / "pipe.wav")                                   # never opened: it would block
    return str(audio)


def test_links_are_followed_and_what_is_passed_over_is_counted(linked_tree):
    discovery = Discovery(Storage(), DiscoveryRequest(inputs=(linked_tree,)))
    found = list(discovery)
    assert all(isinstance(s, SourceRef) for s in found)
    assert sorted(os.path.relpath(s.uri, linked_tree) for s in found) == [
        "a.wav", "b.wav", "dangling.wav", "more/c.wav", "real.wav"]
    assert dict(discovery.passed_over) == {".txt": 1, ".pdf": 1, ".jpg": 1, "(none)": 1, SPECIAL: 1,
                                           DIRECTORY_LINK_WALKED: 2}   # loop, more_again


def test_globs_take_linked_files_too(linked_tree):
    found = expand_pattern(Storage(), f"{linked_tree}/*.wav")
    assert sorted(os.path.basename(s.uri) for s in found) == ["a.wav", "b.wav", "dangling.wav", "real.wav"]


def test_a_run_labels_linked_audio_and_reports_what_it_passed_over(linked_tree, tiny_checkpoint, tmp_path):
    out = str(tmp_path / "out")
    summary = run(["--input", linked_tree, "--output", out, "--model", tiny_checkpoint, "--batch_size", "2",
                   "--run_id", "links", "--max_error_fraction", "1.0"])
    assert sorted(os.path.relpath(c, linked_tree) for c in summary.clips.column("clip_id").to_pylist()) == [
        "a.wav", "b.wav", "more/c.wav", "real.wav"]
    [error] = summary.errors.to_pylist()
    assert error["source_uri"].endswith("dangling.wav") and error["error_type"] == "FileNotFoundError"
    expected = {".pdf": 1, ".jpg": 1, ".txt": 1, "(none)": 1, SPECIAL: 1, DIRECTORY_LINK_WALKED: 2}
    assert summary.files_passed_over == dict(sorted(expected.items()))
    with open(manifest_path(out, "links")) as f:
        assert json.load(f)["files_passed_over"] == summary.files_passed_over
    assert "files passed over (not audio, not shards): (link to a directory walked already): 2" in summary.render()


def test_passed_over_files_are_counted_on_object_storage(s3_server):
    fs = s3_server.filesystem()
    root = f"{s3_server.bucket}/scan-{uuid.uuid4().hex[:8]}"
    for name, data in (("a.wav", WAV), ("d/b.flac", WAV), ("d/s.tar", make_tar([("m.wav", WAV)])),
                       ("d/c.pdf", b"x"), ("notes.TXT", b"x"), ("e/f.opus.bak", b"x")):
        fs.pipe(f"{root}/{name}", data)
    discovery = Discovery(Storage(s3_server.storage_options()), DiscoveryRequest(inputs=(f"s3://{root}",)))
    assert sorted(s.uri.removeprefix(f"s3://{root}/") for s in discovery) == ["a.wav", "d/b.flac", "d/s.tar"]
    assert dict(discovery.passed_over) == {".pdf": 1, ".txt": 1, ".bak": 1}
