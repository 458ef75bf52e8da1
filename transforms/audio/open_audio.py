"""Open an audio file with the decoder that reads it, chosen by content. Beam-free.

libsndfile first (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, AU, ...): it is exact about lengths and
the formats it reads are tested sample by sample. When it cannot open the bytes, FFmpeg (PyAV)
tries them (transforms/audio/ffmpeg_reader.py: MP4/M4A/MOV, Matroska/WebM, Ogg, ASF/WMA, AMR, ADTS
AAC). The file's name plays no part: an M4A called ``.wav`` is read, a WAV called ``.m4a`` too.
"""
from __future__ import annotations

from typing import BinaryIO

from transforms.audio.audio_decode import AudioDecodeError
from transforms.audio.ffmpeg_reader import FfmpegReader
from transforms.audio.sndfile_reader import SndfileReader

AudioReader = SndfileReader | FfmpegReader


def open_audio(source: BinaryIO | str) -> AudioReader:
    """A reader of ``source`` (a path or a seekable binary file object, read from its current
    position): ``header``, ``decoder``, ``blocks(n)``, ``read_all()``, ``close()``. Raises
    :class:`AudioDecodeError` (stage ``decode``) naming why neither decoder could open it."""
    start = None if isinstance(source, str) else source.tell()
    try:
        return SndfileReader(source)
    except AudioDecodeError as sndfile_error:
        if start is not None:
            source.seek(start)
        try:
            return FfmpegReader(source)
        except AudioDecodeError as ffmpeg_error:
            raise AudioDecodeError("decode", f"{sndfile_error}; {ffmpeg_error}") from sndfile_error
