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

import collections
import csv
import io
import json
import os
import posixpath
from collections.abc import Iterator

from fsspec.utils import infer_compression

from transforms.elements import DiscoveryRequest, InputError, SourceRef
from transforms.io.job_failures import is_machine_failure
from transforms.io.names import raw_of, record_name
from transforms.io.storage import LOCAL_PROTOCOLS, Storage, protocol_of

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
    """The source at ``uri``; a name that is not UTF-8 is recorded escaped and its bytes kept
    to open it by (transforms/io/names.py)."""
    return SourceRef(uri=record_name(uri), kind="shard" if is_shard(uri) else "file", raw=raw_of(uri))


def _is_glob(url: str, path: str) -> bool:
    if protocol_of(url) in ("http", "https"):
        return "*" in path
    return bool(GLOB_CHARS & set(path))


# What a scan passes over is counted by kind: a file by its extension (".txt", ".m4a"; "(none)"
# without one), a device, FIFO or socket as SPECIAL, a link to a directory not walked (walked
# already: a loop, or a tree reached another way) as DIRECTORY_LINK_WALKED.
NO_EXTENSION, SPECIAL, DIRECTORY_LINK_WALKED = "(none)", "(special file)", "(link to a directory walked already)"
OTHER_EXTENSIONS = "(other)"    # past MAX_PASSED_OVER_KINDS kinds, or an extension over 16 characters
MAX_PASSED_OVER_KINDS = 64


def extension_of(path: str) -> str:
    """What a file passed over is counted as: its extension, lower-case, with the dot."""
    base = _name(path)
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        return NO_EXTENSION
    return record_name("." + ext) if len(ext) <= 16 else OTHER_EXTENSIONS


class PassedOver(collections.Counter):
    """Kinds of what scans passed over -> how many; bounded to MAX_PASSED_OVER_KINDS kinds."""

    def add(self, kind: str) -> None:
        if kind not in self and len(self) >= MAX_PASSED_OVER_KINDS:
            kind = OTHER_EXTENSIONS
        self[kind] += 1


def _resolve(fs, path: str, info: dict, storage: Storage) -> dict:
    """The entry a listing found, links followed: fsspec lists a local symlink as type "other"
    (its own type, not its target's). A link whose target cannot be looked up (dangling, or a
    loop of links) stays a file, so that one named like audio gets its error row when read."""
    if info.get("type") != "other" or not info.get("islink"):
        return info
    try:
        return storage.retry(lambda: fs.info(path), path)
    except OSError as e:
        if is_machine_failure(e):
            raise
        return dict(info, type="file")


def _real(fs, path: str) -> str | None:
    """The real path of a local directory (to walk each directory once), else None."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return os.path.realpath(path) if protocol in LOCAL_PROTOCOLS else None


def _overlap(a: str, b: str) -> bool:
    """One of two real directories holds the other (or they are one)."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def _walk(storage: Storage, fs, path: str, take, passed_over: PassedOver, walked: set[str]) -> list[str]:
    """Every file under the directory ``path`` that ``take`` accepts, links to files and to
    directories followed; each real directory is walked once (``walked``): a link to a directory
    that holds or lies inside a tree walked already (a loop back up, a second way to one tree)
    is passed over and counted, not walked again."""
    found = storage.retry(lambda: fs.find(path, detail=True), path)
    paths = []
    for p, info in sorted(found.items()):
        link = info.get("type") == "other" and info.get("islink")
        kind = _resolve(fs, p, info, storage).get("type")
        if kind == "directory":
            if not link:      # find walks real directories itself (some stores list them too)
                continue
            real = _real(fs, p)
            if real is not None and any(_overlap(real, w) for w in walked):
                passed_over.add(DIRECTORY_LINK_WALKED)
                continue
            if real is not None:
                walked.add(real)
            paths += _walk(storage, fs, p, take, passed_over, walked)
        elif kind != "file":
            passed_over.add(SPECIAL)
        elif take(p):
            paths.append(p)
        else:
            passed_over.add(extension_of(p))
    return paths


def expand_pattern(storage: Storage, pattern: str, passed_over: PassedOver | None = None) -> list[SourceRef]:
    """Sorted sources for one --input value ([] when it matches nothing). What a directory scan
    leaves out (files that are neither audio nor shards, devices, links to directories walked
    already) is counted in ``passed_over``, by kind."""
    passed_over = PassedOver() if passed_over is None else passed_over
    fs, path = storage.fs_and_path(pattern)
    if _is_glob(pattern, path):
        found = storage.retry(lambda: fs.glob(path, detail=True), pattern)
        paths = []
        for p, info in found.items():
            kind = _resolve(fs, p, info, storage).get("type")
            if kind == "file":         # every file it matches: the user chose them
                paths.append(p)
            elif kind != "directory":  # directories a glob matches are not descended
                passed_over.add(SPECIAL)
    elif storage.retry(lambda: fs.isdir(path), pattern):
        real = _real(fs, path)
        paths = _walk(storage, fs, path, lambda p: is_audio_name(p) or is_shard(p), passed_over,
                      {real} if real else set())
    elif storage.retry(lambda: fs.exists(path), pattern):
        paths = [path]
    else:
        paths = []
    return [source_for(storage.unstrip(fs, p)) for p in sorted(set(paths))]


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
        self.passed_over = PassedOver()   # what directory scans left out, by kind
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
                sources = expand_pattern(self._storage, pattern, self.passed_over)
            except Exception as e:
                if is_machine_failure(e):   # the store is down, not the pattern wrong: raised
                    raise
                yield InputError.from_exception(pattern, "discover", e)
                continue
            if not sources:
                yield InputError(pattern, "discover", "NoFilesMatched",
                                 f"no audio files or shards match {record_name(pattern)!r}")
            for source in sources:
                if self._new(source.location):   # the real name: escaped ones never merge
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
                if is_machine_failure(e):
                    raise
                error = InputError.from_exception(manifest, "manifest", e)
                if entries:
                    error = InputError(manifest, "manifest", error.error_type,
                                       f"manifest stopped after {entries} entries: {error.message}")
                yield error
