"""Build WebDataset-style tar shards in memory for tests and benchmarks."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import soundfile

from pipeline.demo.audio import FORMATS


def audio_bytes(ext: str, samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    fmt, subtype = FORMATS[ext]
    data = np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples
    buf = io.BytesIO()
    soundfile.write(buf, data.astype(np.float32), rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def json_bytes(value) -> bytes:
    return json.dumps(value).encode()


def make_tar(members: list[tuple[str, bytes | None]], compression: str = "") -> bytes:
    """members: (name, data); data None makes a directory entry."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}" if compression else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compression_for(name: str) -> str:
    return "gz" if name.endswith((".tar.gz", ".tgz")) else ""


def write_header_bomb(path: str, claim: int = 1 << 30, header_type: bytes = tarfile.GNUTYPE_LONGNAME,
                      after: bytes = b"") -> None:
    """A ``.tar.gz`` whose first member is an extended header (GNU long name by default) claiming
    ``claim`` bytes, followed by that many zeros, then ``after`` (more raw tar bytes). 1 GiB
    compresses to ~1 MB. Built in about a second: the deflate block of 1 MiB of zeros is made
    once after a full flush and repeated (a full flush resets the compressor, so every copy of
    the block compresses to the same bytes); the gzip trailer's CRC is computed over the whole."""
    import zlib

    info = tarfile.TarInfo("././@LongLink")
    info.type = header_type
    info.size = claim
    head = info.tobuf(format=tarfile.GNU_FORMAT)
    zeros = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc, total = zlib.crc32(head), len(head)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")           # gzip header, mtime 0
        f.write(compressor.compress(head) + compressor.flush(zlib.Z_FULL_FLUSH))
        padded = -(-claim // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
        whole, rest = divmod(padded, len(zeros))
        if not whole:
            raise ValueError("claim under 1 MiB: use a plain tar")
        for _ in range(whole):
            f.write(block)
            crc = zlib.crc32(zeros, crc)
        tail = zeros[:rest] + after
        f.write(compressor.compress(tail) + compressor.flush())
        crc = zlib.crc32(tail, crc)
        total += padded + len(after)
        f.write(crc.to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little"))
