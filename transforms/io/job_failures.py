"""Errors of the machine, not of one input: raised, so that the runner retries the bundle and, if
they persist, the run fails and nothing is published. Beam-free.

An input's own faults (unreadable, corrupt, missing, refused, too large) become error rows. These
do not (README "Trust": failures of the job are not failures of the inputs):

* running out of memory: MemoryError anywhere in an exception's chain (a decoder may wrap it);
* the interpreter's SystemError;
* storage errors that still look transient (:func:`transforms.io.storage.is_transient`: a
  connection that kept dropping, timeouts, 5xx) after the retries of transforms/io/storage.py and
  of the shard reader: a night whose store is down must fail, not publish a table of ``read``
  rows that balance the accounting.

Inference has its own, wider rule (transforms/mindspore_inference.py ``is_job_failure``).
"""
from __future__ import annotations

from typing import BinaryIO

from transforms.io.storage import is_transient


class StorageUnavailable(ConnectionError):
    """Storage failed with transient-looking errors after every retry (a shard that kept breaking)."""


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def is_machine_failure(error: BaseException) -> bool:
    """True for an error of the machine or the store (raise it), False for one an input causes
    (an error row for that input)."""
    if any(isinstance(e, MemoryError) for e in _chain(error)):
        return True
    return isinstance(error, SystemError) or is_transient(error)


class WatchedFile:
    """A binary file that remembers the first machine failure its reads, seeks and tells raised.

    Decoders that call back into Python through C (soundfile's virtual I/O via cffi) swallow
    such an error: cffi prints it and returns 0, so libsndfile sees the end of the file and a
    connection lost midway would label the clip as cut short. The caller checks ``failure``
    after decoding, whatever the decoder made of it, and raises it (transforms/featurize.py)."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.failure: BaseException | None = None

    def _watch(self, name: str, *args):
        try:
            return getattr(self._raw, name)(*args)
        except BaseException as e:
            if self.failure is None and isinstance(e, Exception) and is_machine_failure(e):
                self.failure = e
            raise

    def read(self, *args):
        return self._watch("read", *args)

    def readinto(self, buffer):
        if not hasattr(self._raw, "readinto"):   # callers fall back to read(): not a failure
            raise AttributeError("readinto")
        return self._watch("readinto", buffer)

    def seek(self, *args):
        return self._watch("seek", *args)

    def tell(self):
        return self._watch("tell")

    def __getattr__(self, name):   # name, seekable, close, ...: as the file has them
        return getattr(self._raw, name)
