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
