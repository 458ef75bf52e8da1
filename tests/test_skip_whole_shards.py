"""--skip_labelled at archive scale: a tar shard whose version is unchanged and whose every audio
member was labelled by the same weights is not read at all (bytes read from storage counted
through a real fsspec filesystem); its members are still discovered and skipped. A shard with a
member that errored, or that changed, is read."""
import os

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import run
from tests.counting_fs import PROTOCOL, CountingFileSystem, register
from tests.shard_corpus import audio_bytes, make_tar


def _shard(path, members):
    with open(path, "wb") as f:
        f.write(make_tar(members))


def _wav(seconds, freq=440.0):
    return audio_bytes("wav", tone(seconds, 16000, freq), 16000)


def test_unchanged_fully_labelled_shards_are_not_read(tmp_path, tiny_checkpoint):
    register()
    archive = tmp_path / "archive"
    archive.mkdir()
    a, b, c, d = (str(archive / f"shard-{x}.tar") for x in "abcd")
    _shard(a, [(f"{i:03d}.wav", _wav(0.5 + i / 10, 300.0 + 50 * i)) for i in range(3)])
    _shard(b, [("000.wav", _wav(0.6)), ("001.wav", b"RIFF broken member"), ("002.wav", _wav(0.7, 600.0))])
    _shard(c, [(f"{i:03d}.wav", _wav(0.4 + i / 10, 500.0 + 20 * i)) for i in range(3)])
    write_audio(str(archive / "loose.wav"), noise(0.8, 16000), 16000)
    out = str(tmp_path / "labels")
    base = ["--input", f"{PROTOCOL}://{archive}", "--model", tiny_checkpoint, "--output", out]

    CountingFileSystem.reset()
    night1 = run(base + ["--run_id", "night1"])
    assert night1.counts()["discovered"] == 3 + 3 + 3 + 1
    assert (night1.labelled, night1.errored) == (9, 1)
    assert all(CountingFileSystem.bytes_read[s] > 0 for s in (a, b, c))   # the counting sees reads

    # C changes (a member rewritten: a new version); D is new.
    _shard(c, [(f"{i:03d}.wav", _wav(0.4 + i / 10, 900.0 + 20 * i)) for i in range(3)])
    _shard(d, [("000.wav", _wav(0.5, 700.0)), ("001.wav", _wav(0.5, 800.0))])
    CountingFileSystem.reset()
    night2 = run(base + ["--run_id", "night2", "--skip_labelled", out])
    read = CountingFileSystem.bytes_read
    assert read[a] == 0, "an unchanged shard labelled in full was read"
    assert read[b] > 0, "a shard with an errored member must be read again"
    assert read[c] > 0 and read[d] > 0, "changed and new shards must be read"
    assert read[str(archive / "loose.wav")] == 0   # a plain file labelled before: looked up, not read
    # A's 3 members and B's 2 good ones and the loose file: discovered and skipped, not labelled.
    assert night2.counts() == {"discovered": 3 + 3 + 3 + 2 + 1, "labelled": 3 + 2, "errored": 1,
                               "skipped": 3 + 2 + 1, "errors_by_type": {"decode/AudioDecodeError": 1}}
    assert (night2.shards_skipped, night2.shards_read) == (1, 3)
    assert "1 whole shard(s) not read" in night2.render()

    # Night 3: C and D were labelled in full by night 2, A's record carried over by night 2's
    # statistics (it skipped A whole): only B, with its errored member, is read.
    CountingFileSystem.reset()
    night3 = run(base + ["--run_id", "night3", "--skip_labelled", out])
    read = CountingFileSystem.bytes_read
    assert [s for s in (a, b, c, d) if read[s] > 0] == [b]
    assert night3.counts()["discovered"] == 12 and night3.skipped == 11 and night3.errored == 1
    assert night3.shards_skipped == 3
