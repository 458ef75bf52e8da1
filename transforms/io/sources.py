"""What to label: expand --input patterns and --input_manifest files into sources. Beam-free.

A source is a plain audio file or a tar shard of clips (see transforms/io/shards.py).

* ``--input`` (repeatable): a file, a directory (its audio files and shards,
  recursively, by extension), or a glob (``*``, ``?``, ``[...]``, ``**``) whose
  every matching *file* is taken - the user chose them. Any fsspec URL works:
  ``s3://``, ``gs://``, ``az://``, ``http(s)://``, ``memory://``, ``file://``,
  plain paths. For http(s) only ``*`` makes a glob (``?`` starts a query).
* ``--input_manifest`` (repeatable): a list of URIs, itself at any fsspec URL:
  ``.txt`` (one URI a line; blank lines and ``#`` comments skipped), ``.csv``
  (header row with a ``uri`` column), ``.jsonl`` (one object a line with a
  ``uri`` field) or ``.parquet`` (a ``uri`` column); text formats may be
  compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``). Entries are taken
  literally (no globbing, no listing, no existence check here: a missing one
  fails when it is read and gets its error row), only spelled the way listing
  spells them (``file:///x`` -> ``/x``). Relative entries are resolved against
  the manifest's folder.

Every URI is taken once per run, however many patterns or manifests name it.
"""
from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Iterator

from fsspec.utils import infer_compression

from transforms.elements import DiscoveryRequest, InputError, SourceRef
from transforms.io.storage import Storage, protocol_of

# The one list of names a directory scan (and a tar shard's member scan) takes as audio; the
# README's "Inputs" section lists it. libsndfile reads the first group; FFmpeg (PyAV) the sound
# track of the second. Which decoder reads a file is decided by its content, not by this list.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus",
                    ".m4a", ".m4b", ".aac", ".mp4", ".m4v", ".mov", ".3gp", ".mkv", ".mka", ".webm",
                    ".wma", ".asf", ".amr", ".awb")
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
GLOB_CHARS = frozenset("*?[")
MANIFEST_FORMATS = (".txt", ".csv", ".jsonl", ".ndjson", ".parquet")


def _name(uri: str) -> str:
    if protocol_of(uri) in ("http", "https"):
        uri = uri.split("?", 1)[0].split("#", 1)[0]
    return uri.rsplit("/", 1)[-1].lower()


def is_audio_name(name: str) -> bool:
    return _name(name).endswith(AUDIO_EXTENSIONS)


def is_shard(uri: str) -> bool:
    return _name(uri).endswith(SHARD_SUFFIXES)


def source_for(uri: str) -> SourceRef:
    return SourceRef(uri=uri, kind="shard" if is_shard(uri) else "file")


def _is_glob(url: str, path: str) -> bool:
    if protocol_of(url) in ("http", "https"):
        return "*" in path
    return bool(GLOB_CHARS & set(path))


def expand_pattern(storage: Storage, pattern: str) -> list[SourceRef]:
    """Sorted sources for one --input value ([] when it matches nothing)."""
    fs, path = storage.fs_and_path(pattern)
    if _is_glob(pattern, path):
        found = storage.retry(lambda: fs.glob(path, detail=True), pattern)
        paths = [p for p, info in found.items() if info.get("type") == "file"]
    elif storage.retry(lambda: fs.isdir(path), pattern):
        found = storage.retry(lambda: fs.find(path, detail=True), pattern)
        paths = [p for p, info in found.items()
                 if info.get("type") == "file" and (is_audio_name(p) or is_shard(p))]
    elif storage.retry(lambda: fs.exists(path), pattern):
        paths = [path]
    else:
        paths = []
    return [source_for(storage.unstrip(fs, p)) for p in sorted(paths)]


# ---------------------------------------------------------------- manifests

class ManifestError(ValueError):
    pass


def manifest_format(uri: str) -> tuple[str, str | None]:
    """(format extension, compression) of a manifest, from its name."""
    name = _name(uri)
    compression = infer_compression(name)
    if compression:
        name = name.rsplit(".", 1)[0]
    for ext in MANIFEST_FORMATS:
        if name.endswith(ext):
            if ext == ".parquet" and compression:
                raise ManifestError(f"{uri}: a Parquet manifest cannot be compressed as a whole")
            return ext, compression
    raise ManifestError(f"{uri}: unknown manifest format; use one of {', '.join(MANIFEST_FORMATS)}")


def resolve_entry(manifest_uri: str, entry: str) -> str:
    """Absolute entries as they are; relative ones against the manifest's folder (``.``/``..`` resolved)."""
    if "://" in entry or "::" in entry or entry.startswith("/"):
        return entry
    scheme, sep, path = manifest_uri.rpartition("://")
    folder = posixpath.dirname(path)
    joined = posixpath.normpath(posixpath.join(folder, entry)) if folder else posixpath.normpath(entry)
    return f"{scheme}{sep}{joined}"


def _uri_value(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: no uri")
    return value.strip()


def iter_manifest(storage: Storage, uri: str) -> Iterator[tuple[int, str | None, str | None]]:
    """(entry number, resolved URI, problem) per entry; problem set when the entry is unusable.

    Raises for a manifest that cannot be opened or parsed at all (and midway
    for one that breaks while it is read: entries before stay yielded).
    """
    fmt, compression = manifest_format(uri)
    with storage.open(uri, compression=compression) as raw:
        if fmt == ".parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(raw)
            if "uri" not in parquet.schema_arrow.names:
                raise ManifestError(f"{uri}: no 'uri' column")
            row = 0
            for batch in parquet.iter_batches(batch_size=65536, columns=["uri"]):
                for value in batch.column(0).to_pylist():
                    row += 1
                    yield _checked(uri, row, value, f"row {row}")
            return
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        if fmt == ".csv":
            reader = csv.DictReader(text)
            if "uri" not in (reader.fieldnames or []):
                raise ManifestError(f"{uri}: no 'uri' column in the CSV header")
            for row, record in enumerate(reader, start=1):
                yield _checked(uri, row, record.get("uri"), f"row {row}")
            return
        for line_no, line in enumerate(text, start=1):
            line = line.strip()
            if not line or (fmt == ".txt" and line.startswith("#")):
                continue
            if fmt == ".txt":
                yield line_no, resolve_entry(uri, line), None
                continue
            try:
                value = json.loads(line)
            except ValueError as e:
                yield line_no, None, f"line {line_no}: not JSON ({e})"
                continue
            yield _checked(uri, line_no, value.get("uri") if isinstance(value, dict) else None,
                           f"line {line_no}")


def _checked(manifest_uri: str, number: int, value, where: str):
    try:
        return number, resolve_entry(manifest_uri, _uri_value(value, where)), None
    except ManifestError as e:
        return number, None, str(e)


# ---------------------------------------------------------------- the whole request

class Discovery:
    """Iterate SourceRefs and InputErrors for a DiscoveryRequest; ``duplicates`` counts
    URIs named more than once (taken once)."""

    def __init__(self, storage: Storage, request: DiscoveryRequest):
        self._storage = storage
        self._request = request
        self.duplicates = 0
        self._seen: set[str] = set()

    def _new(self, uri: str) -> bool:
        if uri in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(uri)
        return True

    def __iter__(self) -> Iterator[SourceRef | InputError]:
        for pattern in self._request.inputs:
            try:
                sources = expand_pattern(self._storage, pattern)
            except Exception as e:
                yield InputError.from_exception(pattern, "discover", e)
                continue
            if not sources:
                yield InputError(pattern, "discover", "NoFilesMatched",
                                 f"no audio files or shards match {pattern!r}")
            for source in sources:
                if self._new(source.uri):
                    yield source
        for manifest in self._request.manifests:
            entries = 0
            try:
                for number, uri, problem in iter_manifest(self._storage, manifest):
                    entries += 1
                    if problem:
                        yield InputError(manifest, "manifest", "BadManifestEntry", problem)
                        continue
                    try:
                        uri = self._storage.canonical(uri)
                    except Exception as e:   # e.g. a protocol whose fsspec package is missing
                        yield InputError.from_exception(uri, "manifest", e)
                        continue
                    if self._new(uri):
                        yield source_for(uri)
            except Exception as e:
                error = InputError.from_exception(manifest, "manifest", e)
                if entries:
                    error = InputError(manifest, "manifest", error.error_type,
                                       f"manifest stopped after {entries} entries: {error.message}")
                yield error
