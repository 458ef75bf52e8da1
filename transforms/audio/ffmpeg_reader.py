"""Read the sound track of what libsndfile cannot open with FFmpeg (PyAV), packet by packet. Beam-free.

PyAV wraps FFmpeg's demuxers and decoders and ships FFmpeg inside its wheel, so workers need no
system FFmpeg. It is used for the containers in :data:`FFMPEG_CONTAINERS`, chosen by content
(FFmpeg's probe of the bytes, whatever the file is called): MP4/M4A/MOV/3GP (AAC, ALAC, MP3, ...),
Matroska/WebM (Opus, Vorbis, AAC, ...), Ogg (what libsndfile does not read), ASF (WMA), AMR and raw
ADTS AAC. The first audio stream is read; other streams (video, subtitles) are discarded unread.

Only those containers: FFmpeg probes almost anything as *something* (random bytes as raw MPEG
audio, a WAV header with an unknown codec tag as G.729, ...), and decoding such garbage would
label it. Formats libsndfile reads (WAV, FLAC, MP3, Ogg Vorbis/Opus, AIFF, AU) stay libsndfile's,
so a broken file of those kinds keeps its error row.

Memory does not grow with the file: packets are demuxed and decoded one at a time, converted to
float32 at the stream's own rate and layout (FFmpeg's swresample, no rate change), and handed out
in blocks of about ``block_frames`` frames; resampling to the model's rate is the caller's
(soxr, as for every other format).

Duration: what the container declares (MP4's media header, Matroska's segment duration, ASF's
play duration). Raw streams (ADTS AAC, AMR) declare none; FFmpeg's figure for them is an estimate
from the bit rate, so no claim is recorded and such a file is never counted as truncated.
"""
from __future__ import annotations

from typing import BinaryIO, Iterator

import av
import numpy as np

from transforms.audio.audio_decode import AudioDecodeError, AudioHeader

# FFmpeg demuxer names (each format's comma-separated names) whose audio we decode with FFmpeg.
FFMPEG_CONTAINERS = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "matroska", "webm", "ogg", "asf",
                               "amr", "amrnb", "amrwb", "aac"})
# Demuxers of raw codec streams: FFmpeg's duration for them is a bit-rate estimate, not a claim.
RAW_STREAMS = frozenset({"aac", "amr", "amrnb", "amrwb"})
# A shortfall of up to this many frames (or 1%) against the declared duration is not truncation:
# encoders pad and trim whole codec frames (AAC 1024, WMA 2048 samples) and ASF rounds to ms.
CONTAINER_SLACK_FRAMES = 4096


def _names(container) -> set[str]:
    return set(container.format.name.split(","))


class FfmpegReader:
    """An audio or video file FFmpeg opened: the header of its first audio stream at once, then
    its samples in blocks. Raises :class:`AudioDecodeError` (stage ``decode``) when FFmpeg cannot
    open it, its container is not one of :data:`FFMPEG_CONTAINERS`, or it holds no audio stream."""

    decoder = "ffmpeg"

    def __init__(self, source: BinaryIO | str):
        try:
            self._container = av.open(source, mode="r", metadata_errors="ignore")
        except Exception as e:
            raise AudioDecodeError("decode", f"FFmpeg cannot open it: {e}") from e
        try:
            self._open_stream()
        except BaseException:
            self._container.close()
            raise

    def _open_stream(self) -> None:
        container = self._container
        name, names = container.format.name, _names(container)
        if not names & FFMPEG_CONTAINERS:
            raise AudioDecodeError("decode", f"FFmpeg reads it as {name!r}, which is not a container "
                                             "this pipeline decodes with FFmpeg")
        if not container.streams.audio:
            raise AudioDecodeError("decode", f"the {name} container holds no audio stream")
        self._stream = stream = container.streams.audio[0]
        for other in container.streams:
            if other.index != stream.index:
                other.discard = av.stream.Discard.all   # demuxed past, never decoded
        context = stream.codec_context
        if context is None or not context.sample_rate:
            raise AudioDecodeError("decode", f"the first audio stream of the {name} container has no "
                                             "decodable codec or no sample rate")
        rate, channels = int(context.sample_rate), int(context.channels)
        frames, claimed = 0, False
        if not names & RAW_STREAMS:
            if stream.duration and stream.time_base:
                frames, claimed = round(float(stream.duration * stream.time_base) * rate), True
            elif container.duration:
                frames, claimed = round(container.duration / av.time_base * rate), True
        self.header = AudioHeader(original_sample_rate=rate, channels=channels, frames=frames,
                                  exact_length=False, length_claimed=claimed,
                                  min_slack_frames=CONTAINER_SLACK_FRAMES)

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """(frames, channels) float32 blocks of about ``block_frames`` frames (a block ends on a
        decoded frame's boundary). Corrupt packets raise FFmpeg's error."""
        channels = self.header.channels
        context = self._stream.codec_context
        converter = av.AudioResampler(format="flt", layout=context.layout,
                                      rate=self.header.original_sample_rate)
        pending: list[np.ndarray] = []
        held = 0

        def converted(frame):
            for out in converter.resample(frame):
                yield out.to_ndarray().reshape(-1, channels)

        def frames():
            cut = None
            for packet in self._container.demux(self._stream):
                if cut is not None:
                    if packet.size:
                        raise ValueError(f"incomplete packet at {cut} in the middle of the stream")
                    continue   # the decoder was flushed at the cut
                if packet.is_corrupt and packet.size:
                    # FFmpeg flags a packet the file ended inside: a file cut short (an interrupted
                    # upload) ends here, as a cut WAV ends where its bytes end.
                    cut = f"{float(packet.pts * packet.time_base):.2f} s" if packet.pts is not None else "?"
                    packet = None   # flush the decoder instead
                for frame in self._stream.codec_context.decode(packet):
                    yield from converted(frame)   # an empty (or None) packet flushes the decoder
            yield from converted(None)            # and this flushes the converter

        for samples in frames():
            pending.append(samples)
            held += samples.shape[0]
            if held >= block_frames:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, held = [], 0
        if held:
            yield np.concatenate(pending)

    def read_all(self) -> np.ndarray:
        chunks = list(self.blocks(1 << 16))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.header.channels), np.float32)

    def close(self) -> None:
        self._container.close()
