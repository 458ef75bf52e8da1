"""A real fsspec filesystem (the local one) under its own protocol, ``counted://``, that counts
the bytes read from each file: tests see which objects a run actually read."""
from __future__ import annotations

import collections
import threading

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import stringify_path

PROTOCOL = "counted"


class _CountingFile:
    def __init__(self, raw, path: str):
        self._raw = raw
        self._path = path

    def read(self, *args):
        data = self._raw.read(*args)
        CountingFileSystem.add(self._path, len(data))
        return data

    def readinto(self, buffer):
        n = self._raw.readinto(buffer)
        CountingFileSystem.add(self._path, n or 0)
        return n

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()


class CountingFileSystem(LocalFileSystem):
    protocol = (PROTOCOL,)
    bytes_read: collections.Counter = collections.Counter()
    _lock = threading.Lock()

    @classmethod
    def add(cls, path: str, n: int) -> None:
        with cls._lock:
            cls.bytes_read[path] += n

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.bytes_read.clear()

    @classmethod
    def _strip_protocol(cls, path):
        path = stringify_path(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3:]
        return LocalFileSystem._strip_protocol(path)

    def unstrip_protocol(self, name):
        return f"{PROTOCOL}://{self._strip_protocol(name)}"

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        return _CountingFile(f, self._strip_protocol(path)) if "r" in mode else f


def register() -> None:
    fsspec.register_implementation(PROTOCOL, CountingFileSystem, clobber=True)
