"""Expand --input values (paths, globs, fsspec URLs) into one URI per file."""
from __future__ import annotations

import apache_beam as beam
import fsspec

from transforms.elements import InputError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")
GLOB_CHARS = set("*?[")


def _unstrip(fs, path: str) -> str:
    """fsspec strips the protocol; put it back so URIs are usable anywhere."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def expand_input(pattern: str, storage_options: dict | None = None) -> list[str]:
    """Sorted file URIs. A glob yields every matching file (the user chose them);
    a directory yields the audio files beneath it, by extension; a file yields itself."""
    fs, path = fsspec.core.url_to_fs(pattern, **(storage_options or {}))
    if GLOB_CHARS & set(path):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.lower().endswith(AUDIO_EXTENSIONS)]
    elif fs.exists(path):
        found = [path]
    else:
        found = []
    return sorted(_unstrip(fs, p) for p in found)


class ExpandInputs(beam.DoFn):
    """Pattern -> file URIs; a pattern matching nothing becomes an error row."""

    def __init__(self, storage_options: dict | None = None):
        self._storage_options = storage_options
        self._discovered = beam.metrics.Metrics.counter("audio_labelling", "inputs_discovered")

    def process(self, pattern: str):
        try:
            uris = expand_input(pattern, self._storage_options)
        except Exception as e:
            self._discovered.inc()
            yield beam.pvalue.TaggedOutput("errors", InputError.from_exception(pattern, "discover", e))
            return
        if not uris:
            self._discovered.inc()
            yield beam.pvalue.TaggedOutput("errors", InputError(
                pattern, "discover", "NoFilesMatched", f"no audio files match {pattern!r}"))
        for uri in uris:
            self._discovered.inc()
            yield uri
