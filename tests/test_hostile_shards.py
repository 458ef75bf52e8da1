"""Hostile tar shards: odd member names, non-file members, lying headers, compression bombs,
broken archives. Each must end the way docs/storage.md says, with the counts adding up, no
crash, no hang, nothing written outside the output folder and memory bounded.

Reader-level tests use ``ShardReader`` on its own (no Beam); one full run takes every hostile
shard at once. Calls that could spin run in a thread with a generous join timeout: not a timing
assertion, only a way to turn a hang into a failure.
"""
import bz2
import gzip
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import threading

import pytest

from pipeline.demo.audio import chirp, noise, tone
from pipeline.main import run
from tests.shard_corpus import audio_bytes, make_tar, write_header_bomb
from transforms.io.shards import MAX_HEADER_BYTES, MAX_MEMBER_BYTES, ShardReader, ShardReadError
from transforms.io.storage import RetryPolicy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0)
HANG_LIMIT_S = 120
HUGE = 1 << 62                         # a GNU base-256 size field says 4 EiB
BOMB_SIZE = MAX_MEMBER_BYTES + (256 << 20)   # 1.25 GiB of zeros: over the member cap
WAV = audio_bytes("wav", tone(1.0, 16000, 440.0), 16000)
FLAC = audio_bytes("flac", noise(1.0, 22050, 3), 22050)
OGG = audio_bytes("ogg", chirp(1.0, 16000), 16000)


def guarded(fn, *args):
    """fn(*args) in a thread; its result, or the exception it raised, re-raised here."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn(*args)
        except BaseException as e:   # noqa: BLE001 - re-raised below
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT_S)
    assert not thread.is_alive(), f"still running after {HANG_LIMIT_S} s: it hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def read_all(data: bytes):
    reader = ShardReader("mem://s.tar", lambda: io.BytesIO(data), policy=NO_WAIT)
    items = []
    try:
        for item in reader:
            items.append(item)   # noqa: PERF402 - what came before the error is kept
    except ShardReadError as e:
        return items, reader.stats, e
    return items, reader.stats, None


def _pad(n: int) -> bytes:
    return bytes(-n % tarfile.BLOCKSIZE)


def member(name: str, data: bytes, claim: int | None = None) -> bytes:
    """One member as raw tar bytes; ``claim`` is the size its header states (a lie if given)."""
    info = tarfile.TarInfo(name)
    info.size = len(data) if claim is None else claim
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + _pad(len(data))


END = bytes(2 * tarfile.BLOCKSIZE)


def special_members() -> list[tarfile.TarInfo]:
    """Members that are no regular file, several named like audio."""
    out = []
    for name, kind, extra in [("dir.wav", tarfile.DIRTYPE, {}),
                              ("link.wav", tarfile.SYMTYPE, {"linkname": "/etc/passwd"}),
                              ("hard.wav", tarfile.LNKTYPE, {"linkname": "keep.wav"}),
                              ("fifo.wav", tarfile.FIFOTYPE, {}),
                              ("dev.wav", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3})]:
        info = tarfile.TarInfo(name)
        info.type = kind
        for k, v in extra.items():
            setattr(info, k, v)
        out.append(info)
    return out


def tar_with_specials(audio: list[tuple[str, bytes]], other: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in audio[:1]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in special_members():
            tar.addfile(info)
        for name, data in other + audio[1:]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_gzip_bomb(path: str, size: int = BOMB_SIZE) -> None:
    """A .tar.gz whose first member is ``size`` bytes of zeros (~1000:1 compressed), then a good
    WAV: built streaming, never held in memory."""
    zeros = bytes(1 << 20)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
        info = tarfile.TarInfo("bomb.wav")
        info.size = size
        gz.write(info.tobuf(format=tarfile.GNU_FORMAT))
        left = size
        while left:
            step = min(left, len(zeros))
            gz.write(zeros if step == len(zeros) else zeros[:step])
            left -= step
        gz.write(_pad(size) + member("after.wav", WAV) + END)


def write_bz2_bomb(path: str, size: int = BOMB_SIZE) -> None:
    """A shard named .tar holding bzip2 data: ``size`` bytes of zeros compress to ~1 KB."""
    zeros = bytes(1 << 20)
    compressor = bz2.BZ2Compressor(9)
    with open(path, "wb") as raw:
        info = tarfile.TarInfo("bomb.wav")
        info.size = size
        raw.write(compressor.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
        raw.writelines(compressor.compress(zeros) for _ in range(size // len(zeros)))
        raw.write(compressor.compress(member("after.wav", WAV) + END))
        raw.write(compressor.flush())


# ---------------------------------------------------------------- reader level

@pytest.mark.parametrize("compression", ["", "gz"])
@pytest.mark.parametrize("lying", ["big.wav", "big.txt"])
def test_a_member_claiming_exabytes_ends_the_shard_with_an_error_not_a_hang(lying, compression):
    """tarfile's stream mode skips a member by reading empty blocks up to the offset its header
    claims, without noticing the end of the data: 2**62 bytes is a spin of ~10**14 reads."""
    raw = member("a.wav", b"first") + member(lying, b"0123456789", claim=HUGE) + member("c.wav", b"c") + END
    data = gzip.compress(raw, mtime=0) if compression else raw
    items, stats, error = guarded(read_all, data)
    assert [(type(i).__name__, i.member_name) for i in items] == [("ShardClip", "a.wav")] + (
        [("MemberProblem", "big.wav")] if lying == "big.wav" else [])   # over the 1 GiB cap
    assert error is not None and isinstance(error.cause, tarfile.ReadError)
    assert "unexpected end of data" in str(error)
    assert stats.members == 2   # c.wav's header lies inside the claimed data: never reached


@pytest.mark.parametrize("compression", ["", "gz"])
@pytest.mark.parametrize("damage", ["truncated mid-header", "corrupt header"])
def test_a_header_broken_midway_is_a_shard_error_not_a_silent_end(damage, compression):
    """tarfile treats a short or invalid header after the first as the end of the archive: the
    members after it would vanish without a row. docs/storage.md: a shard that breaks midway
    keeps the rows of what was read and gets one error row saying where it stopped."""
    good = member("a.wav", b"a" * 600) + member("b.wav", b"b" * 600)
    third = member("c.wav", b"c" * 600) + member("d.wav", b"d" * 600) + END
    if damage == "truncated mid-header":
        raw = good + third[:300]
    else:
        broken = bytearray(third)
        broken[20] ^= 0xFF          # c.wav's name: its checksum no longer matches
        raw = good + bytes(broken)
    data = gzip.compress(raw, mtime=0) if compression else raw
    items, _, error = guarded(read_all, data)
    assert [i.member_name for i in items] == ["a.wav", "b.wav"]
    assert error is not None, "the rest of the shard was dropped without an error"
    assert isinstance(error.cause, tarfile.ReadError)
    assert "after member 'b.wav'" in str(error)


def test_a_cut_at_a_member_boundary_is_read_as_the_end_like_tar_does():
    """Without the end-of-archive blocks, a shard cut exactly between members cannot be told from
    one written without them; tar and tarfile accept it, and so does the reader."""
    raw = member("a.wav", b"a" * 600) + member("b.wav", b"b" * 600)
    items, _, error = read_all(raw)
    assert [i.member_name for i in items] == ["a.wav", "b.wav"] and error is None


def test_empty_and_non_tar_shards_are_shard_errors():
    for data in (b"", b"this is a text file, not a tar\n" * 40,
                 b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + random.Random(3).randbytes(3000)):
        items, stats, error = read_all(data)
        assert items == [] and error is not None and stats.members == 0, data[:20]
        assert "could not open or read the shard" in str(error) or "before the first" in str(error)


MEMORY_PROBE = r"""
import json, sys, tracemalloc
sys.path.insert(0, sys.argv[2])
from transforms.io.shards import ShardReader, ShardReadError
from transforms.io.storage import RetryPolicy

def peak_rss():
    # VmHWM belongs to this program's memory map (it starts afresh at exec); ru_maxrss would
    # carry the parent's peak over from the fork.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

path = sys.argv[1]
before = peak_rss()
tracemalloc.start()
items, error = [], None
try:
    for item in ShardReader(path, lambda: open(path, "rb"), policy=RetryPolicy(attempts=1)):
        items.append([type(item).__name__, item.member_name, getattr(item, "error_type", None)])
except ShardReadError as e:
    error = [type(e.cause).__name__, str(e)]
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"items": items, "error": error, "traced_peak": peak, "rss_before": before,
                  "rss_peak": peak_rss()}))
"""


def probe_memory(path: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, path, REPO], capture_output=True,
                         text=True, timeout=HANG_LIMIT_S, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def gzip_bomb(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("bomb") / "bomb.tar.gz")
    write_gzip_bomb(path)
    assert os.path.getsize(path) < BOMB_SIZE / 500   # ~1.3 MB for 1.25 GiB
    return path


def test_a_gzip_bomb_member_over_the_cap_is_skipped_in_bounded_memory(gzip_bomb):
    found = probe_memory(gzip_bomb)
    assert found["error"] is None
    assert found["items"] == [["MemberProblem", "bomb.wav", "MemberTooLarge"],
                              ["ShardClip", "after.wav", None]]
    # Streaming: far below the 1.25 GiB the member decompresses to.
    assert found["traced_peak"] < 64 << 20, found
    assert found["rss_peak"] - found["rss_before"] < 128 << 20, found


def test_a_bzip2_bomb_named_tar_is_refused_before_it_is_decompressed(tmp_path):
    """Shards are plain or gzip tars (docs/storage.md). tarfile's ``r|*`` would also take bzip2
    and xz, whose decompressors return everything a block holds at once: 1.25 GiB of zeros in
    one ~1 KB bzip2 block is 1.25 GiB in memory before the first header is parsed."""
    path = str(tmp_path / "bomb.tar")
    write_bz2_bomb(path)
    assert os.path.getsize(path) < 4096
    found = probe_memory(path)
    assert found["items"] == [] and found["error"][0] == "ReadError", found
    assert "bzip2" in found["error"][1]
    assert found["traced_peak"] < 64 << 20, found
    assert found["rss_peak"] - found["rss_before"] < 128 << 20, found


# ---------------------------------------------------------------- extended headers (issue 19, finding 5)

def extended(header_type: bytes, data: bytes, claim: int | None = None) -> bytes:
    """An extended header member (GNU long name/link, pax) holding ``data``."""
    info = tarfile.TarInfo("././@LongLink")
    info.type = header_type
    info.size = len(data) if claim is None else claim
    return info.tobuf(format=tarfile.GNU_FORMAT) + data + _pad(len(data))


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n"
    n = len(body) + 1
    while len(f"{n}{body}") != n:
        n += 1
    return f"{n}{body}".encode()


def gnu_sparse(name: str, extension_blocks: int) -> bytes:
    """An old-GNU sparse member whose header says more sparse maps follow, then that many
    extension blocks each saying the same (tarfile reads them all before the member's data)."""
    header = bytearray(tarfile.TarInfo(name).tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[482] = 1                                    # isextended
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)          # the checksum over the patched header
    block = bytearray(tarfile.BLOCKSIZE)
    block[0:12], block[12:24] = b"%011o\0" % 512, b"%011o\0" % 512
    block[504] = 1
    return bytes(header) + bytes(block) * extension_blocks


HEADER_BOMBS = {
    # 1 GiB claimed, a few bytes there: tarfile would ask for the whole claim in one read.
    "long_name": extended(tarfile.GNUTYPE_LONGNAME, b"x" * 100, claim=1 << 30),
    "long_link": extended(tarfile.GNUTYPE_LONGLINK, b"x" * 100, claim=1 << 30),
    "pax": extended(tarfile.XHDTYPE, pax_record("comment", "x" * 50), claim=1 << 30),
    "global_pax": extended(tarfile.XGLTYPE, pax_record("comment", "x" * 50), claim=1 << 30),
    # Each under the cap, together over it: global records are kept for the rest of the shard.
    "global_pax_piling_up": b"".join(extended(tarfile.XGLTYPE, pax_record(f"k{i}", "x" * (600 << 10)))
                                     for i in range(2)),
    # A chain of headers for one member: each under the cap, together over it.
    "pax_then_long_name": extended(tarfile.XHDTYPE, pax_record("comment", "x" * (700 << 10)))
                          + extended(tarfile.GNUTYPE_LONGNAME, b"n" * (700 << 10)),
    "sparse_map": gnu_sparse("s.wav", 3000),           # 1.5 MB of sparse extension blocks
}


@pytest.mark.parametrize("kind", sorted(HEADER_BOMBS))
def test_extended_headers_past_the_cap_end_the_shard_with_one_error(kind):
    raw = member("a.wav", WAV) + HEADER_BOMBS[kind] + member("b.wav", WAV) + END
    items, _, error = guarded(read_all, raw)
    assert [i.member_name for i in items] == ["a.wav"]
    assert error is not None and type(error.cause).__name__ == "TarHeaderTooLarge", error
    assert f"more than {MAX_HEADER_BYTES} bytes of extended header data" in str(error)


def test_extended_headers_under_the_cap_are_read():
    name = "d/" + "long" * 60 + ".wav"                  # a GNU long name of 242 bytes
    raw = (extended(tarfile.XGLTYPE, pax_record("comment", "global")) + member("a.wav", WAV)
           + extended(tarfile.GNUTYPE_LONGNAME, name.encode() + b"\0") + member("x", WAV) + END)
    items, _, error = read_all(raw)
    assert error is None and [i.member_name for i in items] == ["a.wav", name]


@pytest.fixture(scope="module")
def header_bomb(tmp_path_factory) -> str:
    """The issue's shard: a ~1 MB .tar.gz whose GNU long-name header claims 1 GiB (zeros)."""
    path = str(tmp_path_factory.mktemp("header_bomb") / "long_name_bomb.tar.gz")
    write_header_bomb(path, after=member("after.wav", WAV) + END)
    assert os.path.getsize(path) < 2 << 20
    return path


def test_a_1gib_long_name_in_a_1mb_shard_is_one_error_in_bounded_memory(header_bomb):
    """tarfile alone reads the claimed GiB whole (2.1 GB peak RSS); the cap refuses it unread.
    benchmarks/bench_shard_memory.py reports the figure against a shard without it."""
    found = probe_memory(header_bomb)
    assert found["items"] == [] and found["error"][0] == "TarHeaderTooLarge", found
    assert "GNU long-name header at tar offset 0 claims 1073741824 bytes" in found["error"][1]
    assert found["rss_peak"] - found["rss_before"] < 64 << 20, found


# ---------------------------------------------------------------- the whole job

@pytest.fixture(scope="module")
def hostile_shard_run(tmp_path_factory, tiny_checkpoint, gzip_bomb, header_bomb):
    base = tmp_path_factory.mktemp("hostile_shards")
    shards, out = base / "in", base / "out"
    shards.mkdir()
    cwd = base / "work" / "a" / "b"      # ../../x.flac would land in base/work
    cwd.mkdir(parents=True)
    inside_abs = str(base / "abs" / "target.wav")
    expected = {}                          # shard -> (clip member names, error rows)

    def shard(name, data, clips=(), errors=()):
        (shards / name).write_bytes(data)
        expected[name] = (set(clips), set(errors))

    shard("names.tar", make_tar([("/etc/passwd.wav", WAV), ("../../x.flac", FLAC),
                                 (inside_abs, OGG), ("./d/../../y.wav", WAV)]),
          clips=["/etc/passwd.wav", "../../x.flac", inside_abs, "./d/../../y.wav"])
    shard("specials.tar", tar_with_specials([("keep.wav", WAV)], [("notes.txt", b"hi"),
                                                                  ("label.cls", b"3"),
                                                                  ("img.jpg", b"\xff\xd8")]),
          clips=["keep.wav"])
    shard("huge_audio_claim.tar",
          member("a.wav", WAV) + member("big.wav", b"0123456789", claim=HUGE) + member("c.wav", WAV) + END,
          clips=["a.wav"], errors=[("big.wav", "MemberTooLarge"), (None, "ReadError")])
    shard("huge_other_claim.tar",
          member("a.wav", WAV) + member("big.txt", b"0123456789", claim=HUGE) + member("c.wav", WAV) + END,
          clips=["a.wav"], errors=[(None, "ReadError")])
    shutil.copyfile(gzip_bomb, shards / "bomb.tar.gz")
    expected["bomb.tar.gz"] = ({"after.wav"}, {("bomb.wav", "MemberTooLarge")})
    shutil.copyfile(header_bomb, shards / "long_name_bomb.tar.gz")   # one row for the shard
    expected["long_name_bomb.tar.gz"] = (set(), {(None, "TarHeaderTooLarge")})
    shard("bzip2_content.tar", bz2.compress(make_tar([("z.wav", WAV)])), errors=[(None, "ReadError")])
    shard("not_a_tar.tar", b"<html>404 Not Found</html>\n" * 30, errors=[(None, "ReadError")])
    shard("garbage.tgz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + random.Random(5).randbytes(5000),
          errors=[(None, "ReadError")])
    shard("empty.tar", b"", errors=[(None, "ReadError")])
    shard("no_members.tar", make_tar([]), errors=[(None, "NoAudioMembers")])
    shard("only_text.tar", make_tar([("a.txt", b"x"), ("a.json", b"{}")]), errors=[(None, "NoAudioMembers")])
    two = member("a.wav", WAV) + member("b.wav", WAV)
    shard("truncated_header.tar", two + member("c.wav", WAV)[:300], clips=["a.wav", "b.wav"],
          errors=[(None, "ReadError")])
    shard("truncated_header.tar.gz", gzip.compress(two + member("c.wav", WAV)[:300], mtime=0),
          clips=["a.wav", "b.wav"], errors=[(None, "ReadError")])
    corrupt = bytearray(member("c.wav", WAV) + END)
    corrupt[5] ^= 0xFF
    shard("corrupt_header.tar", two + bytes(corrupt), clips=["a.wav", "b.wav"], errors=[(None, "ReadError")])

    # Where the names would land if used as paths: relative ones from the run's cwd
    # (base/work/a/b) stay inside base, which is walked; from / or the repo they reach /.
    escapes = ["/etc/passwd.wav", "/x.flac", "/y.wav", inside_abs]

    def snapshot():
        seen = {os.path.join(folder, f) for folder, _, files in os.walk(base)
                if not folder.startswith(str(out)) for f in files}
        return seen | {p for p in escapes if os.path.lexists(p)}

    before = snapshot()
    old_cwd = os.getcwd()
    os.chdir(cwd)
    try:
        summary = guarded(run, ["--input", str(shards), "--output", str(out), "--model", tiny_checkpoint,
                                "--batch_size", "4", "--top_k", "2", "--run_id", "hostile",
                                "--max_error_fraction", "1.0"])
    finally:
        os.chdir(old_cwd)
    return str(shards), expected, summary, before, snapshot()


def test_every_hostile_shard_ends_as_documented(hostile_shard_run):
    _, expected, summary, _, _ = hostile_shard_run
    clips = {}
    for row in summary.clips.to_pylist():
        assert row["clip_id"] == f"{row['shard_uri']}#{row['member_name']}"
        clips.setdefault(os.path.basename(row["shard_uri"]), set()).add(row["member_name"])
    errors = {}
    for row in summary.errors.to_pylist():
        assert row["stage"] == "read" and row["message"], row
        errors.setdefault(os.path.basename(row["shard_uri"]), set()).add(
            (row["member_name"], row["error_type"]))
    assert {n: c for n, (c, _) in expected.items() if c} == clips
    assert {n: e for n, (_, e) in expected.items() if e} == errors


def test_hostile_shard_counts_add_up(hostile_shard_run):
    _, expected, summary, _, _ = hostile_shard_run
    rows = sum(len(c) + len(e) for c, e in expected.values())
    assert summary.discovered == summary.clips.num_rows + summary.errors.num_rows == rows
    assert summary.shards_read == len(expected)
    # specials.tar: 5 special members + notes.txt, label.cls, img.jpg; huge_other_claim.tar:
    # big.txt; only_text.tar: a.txt (a.json is a sidecar)
    assert summary.members_ignored == 8 + 1 + 1


def test_member_names_never_become_paths(hostile_shard_run):
    _, _, _, before, after = hostile_shard_run
    assert after == before, f"files appeared outside the output folder: {sorted(after - before)}"
    assert not os.path.lexists("/etc/passwd.wav")
