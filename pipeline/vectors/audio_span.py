"""A span of a recording, decoded in order: the query's ``--start``..``--end`` and a hit's window
on the HTML page. Beam-free.

Read with transforms/audio/open_audio.py (libsndfile, else FFmpeg, chosen by content, as the
pipeline reads its inputs), block by block from the start, keeping only the span: a seek is not
sample-accurate in every format (MP3), and FFmpeg's formats read only in order.
"""
from __future__ import annotations

from typing import BinaryIO, Callable

import numpy as np

from transforms.audio.audio_decode import AudioHeader
from transforms.audio.open_audio import open_audio

BLOCK_FRAMES = 1 << 16


def read_span(source: BinaryIO | str, start_seconds: float, end_seconds: float | None,
              to_frame: Callable[[float], int] = lambda x: int(round(x)),
              block_frames: int = BLOCK_FRAMES) -> tuple[np.ndarray, AudioHeader]:
    """(samples, header): the (frames, channels) float32 samples of ``start_seconds`` up to
    ``end_seconds`` (None: to the end), the frames chosen by ``to_frame(seconds * rate)``; fewer
    (or none) where the recording ends sooner."""
    reader = open_audio(source)
    try:
        header = reader.header
        rate = header.original_sample_rate
        first = max(0, to_frame(start_seconds * rate))
        last = None if end_seconds is None else to_frame(end_seconds * rate)
        pieces, at = [], 0
        if last is None or last > first:
            for block in reader.blocks(block_frames):
                lo = max(first - at, 0)
                hi = len(block) if last is None else min(len(block), last - at)
                if hi > lo:
                    pieces.append(np.array(block[lo:hi]))   # a copy: the reader reuses its buffer
                at += len(block)
                if last is not None and at >= last:
                    break
        samples = np.concatenate(pieces) if pieces else np.zeros((0, header.channels), np.float32)
        return samples, header
    finally:
        reader.close()
