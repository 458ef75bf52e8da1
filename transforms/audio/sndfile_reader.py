"""Read audio with libsndfile (WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, AU, ...), block by block. Beam-free."""
from __future__ import annotations

from typing import BinaryIO, Iterator

import numpy as np
import soundfile
from soundfile import _ffi, _snd

from transforms.audio.audio_decode import AudioHeader, open_sound

# Formats whose frame count libsndfile estimates instead of reading it from the file's structure.
_ESTIMATED_LENGTH_FORMATS = frozenset({"MPEG"})


def _read_frames(sound: soundfile.SoundFile, out: np.ndarray) -> int:
    """Reads up to ``len(out)`` frames into ``out`` (float32, C order, (frames, channels)) with
    libsndfile's sequential read; returns the frames read, 0 at the end of the file.

    Not ``SoundFile.read``: soundfile calls tell() before and seek() after every read, and on MP3
    libsndfile's (mpg123's) seek is not sample-accurate, so reading an MP3 in blocks through
    ``SoundFile.read`` returns wrong samples from the second or third block on (soundfile 0.14,
    libsndfile 1.2.2: up to 0.6 off from sample 8192 of a tone with 4096-frame blocks).
    Whole-file reads only seek once, at the end, which is why ``decode_audio`` is unaffected.
    tests/test_windowing.py checks that block reads equal a whole-file read for every format.
    """
    frames = _snd.sf_readf_float(sound._file, _ffi.cast("float *", _ffi.from_buffer(out)), out.shape[0])
    soundfile._error_check(_snd.sf_error(sound._file))
    return int(frames)


class SndfileReader:
    """An audio file libsndfile opened: its header at once, then its samples in blocks."""

    decoder = "libsndfile"

    def __init__(self, source: BinaryIO | str):
        self.sound = s = open_sound(source)
        self.header = AudioHeader(original_sample_rate=int(s.samplerate), channels=int(s.channels),
                                  frames=int(s.frames), exact_length=s.format not in _ESTIMATED_LENGTH_FORMATS)

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """(frames, channels) float32 blocks of at most ``block_frames`` frames; each is only valid
        until the next one is asked for (the read buffer is reused). Read errors are raised as
        libsndfile reports them."""
        buffer = np.empty((block_frames, self.header.channels), np.float32)
        while True:
            n = _read_frames(self.sound, buffer)
            if n == 0:
                return
            yield buffer[:n]

    def read_all(self) -> np.ndarray:
        """The whole file as (frames, channels) float32: one read (see :func:`_read_frames`)."""
        return self.sound.read(dtype="float32", always_2d=True)

    def close(self) -> None:
        self.sound.close()
