"""A worker's copy of the checkpoint: verified against the launcher's digests, downloaded once per
machine into a content-addressed cache. Beam-free.

The launcher fingerprints the checkpoint files when it inspects ``--model``
(``CheckpointInfo.file_sha256``). A worker loads only files with exactly those digests: a
checkpoint replaced on storage after launch (or a worker reading another copy) fails the job
with :class:`CheckpointDigestMismatch`, instead of labelling rows that carry the launcher's
``model_sha256`` with other weights.

Cache layout (per machine, shared by the worker processes of every run)::

    <cache root>/checkpoints/<key>/{config.json, model.safetensors, preprocessor_config.json}

The cache root is ``$AUDIO_LABELLING_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/audio-labelling``
(other caches of the project take their own subfolders there). ``key`` is the SHA-256 of the
sorted ``name digest`` lines of the files, so weights and configs are addressed together: a new
config next to the same weights is a new entry.

Writes are atomic: files are downloaded into a private ``.tmp-*`` folder beside the entries,
verified, then the folder is renamed to ``<key>``. Processes loading at once each download to
their own folder; the first rename wins and the others drop theirs. Every reuse hashes the files
again; an entry that no longer matches its key is moved aside (one rename) and rebuilt. Temp
folders are removed when a load ends, and ones left by a killed process after a day.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from typing import Callable

from transforms.io.checkpoint import (CHECKPOINT_FILES, CheckpointError, checkpoint_filesystem,
                                      sha256_of_file)
from transforms.io.hub_models import HUB_SCHEME, fetch_hub_snapshot
from transforms.io.storage import retry
from transforms.io.machine_cache import cache_root

CHECKPOINTS_SUBFOLDER = "checkpoints"
_PARTIAL_PREFIXES = (".tmp-", ".trash-")
STALE_PARTIAL_SECONDS = 24 * 3600
_LOG = logging.getLogger(__name__)


class CheckpointDigestMismatch(CheckpointError):
    """The checkpoint a worker sees is not the one the launcher inspected."""


def cache_key(file_sha256: dict[str, str]) -> str:
    lines = "".join(f"{name} {file_sha256[name]}\n" for name in sorted(file_sha256))
    return hashlib.sha256(lines.encode()).hexdigest()


def _mismatch_message(uri: str, name: str, expected: str, got: str | None) -> str:
    seen = f"sha256 {got}" if got else "no such file"
    return (f"checkpoint digest mismatch: {name} of {uri} has {seen} on this worker, but the launcher "
            f"inspected sha256 {expected}. The checkpoint changed after the job was launched (or this "
            "worker reads another copy); relaunch the job to label with the checkpoint as it is now.")


def verify_files(folder: str, expected: dict[str, str], uri: str) -> None:
    """Raises CheckpointDigestMismatch unless every expected file in ``folder`` has its digest."""
    for name in sorted(expected):
        path = os.path.join(folder, name)
        got = sha256_of_file(path) if os.path.isfile(path) else None
        if got != expected[name]:
            raise CheckpointDigestMismatch(_mismatch_message(uri, name, expected[name], got))


def _is_local(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def discard_entry(folder: str, base: str) -> None:
    """Moves a folder out of the way in one rename (readers see it whole or not at all), then
    deletes it."""
    trash = tempfile.mkdtemp(prefix=".trash-", dir=base)
    try:
        os.rename(folder, os.path.join(trash, "entry"))
    except FileNotFoundError:   # another process discarded it first
        pass
    shutil.rmtree(trash, ignore_errors=True)


def _sweep_stale_partials(base: str) -> None:
    """Temp folders of processes killed mid-download; a live download is never a day old."""
    cutoff = time.time() - STALE_PARTIAL_SECONDS
    for entry in os.scandir(base):
        if entry.name.startswith(_PARTIAL_PREFIXES):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    shutil.rmtree(entry.path, ignore_errors=True)
            except FileNotFoundError:
                pass


def _cached_entry(final: str, expected: dict[str, str], uri: str, base: str) -> str | None:
    if not os.path.isdir(final):
        return None
    try:
        verify_files(final, expected, uri)
    except CheckpointDigestMismatch as e:
        _LOG.warning("cached checkpoint %s is damaged (%s); downloading it again", final, e)
        discard_entry(final, base)
        return None
    return final


def _download(fs, root: str, names: list[str], folder: str, uri: str) -> dict[str, str]:
    got = {}
    for name in names:
        local = os.path.join(folder, name)
        try:
            retry(lambda: fs.get(f"{root}/{name}", local), f"downloading {uri}/{name}")
        except FileNotFoundError:
            continue   # reported as missing by the digest check
        got[name] = sha256_of_file(local)
    return got


def fetch_checkpoint(uri: str, storage_options: dict | None = None,
                     expected: dict[str, str] | None = None) -> str:
    """A local folder holding the checkpoint's files, verified against ``expected`` (file name ->
    SHA-256, from the launcher). Local checkpoints are verified in place; remote ones come from
    this machine's cache, downloaded on a miss. Without ``expected`` (tests, tools) the files are
    taken as they are. A pinned hub model (``hf://ORG/NAME@<sha>``) comes from this machine's
    Hugging Face cache (transforms/io/hub_models.py) and is verified there."""
    if uri.startswith(HUB_SCHEME):
        folder = fetch_hub_snapshot(uri, sorted(expected or ()))
        if expected:
            verify_files(folder, expected, uri)
        return folder
    fs, root = checkpoint_filesystem(uri, storage_options)
    if _is_local(fs):
        if expected:
            verify_files(root, expected, uri)
        return root
    base = os.path.join(cache_root(), CHECKPOINTS_SUBFOLDER)
    os.makedirs(base, exist_ok=True)
    if expected:
        hit = _cached_entry(os.path.join(base, cache_key(expected)), expected, uri, base)
        if hit:
            _LOG.info("checkpoint %s: using this machine's verified copy %s", uri, hit)
            return hit
    got: dict[str, str] = {}

    def fill(partial: str) -> str:
        names = sorted(expected) if expected else [n for n in CHECKPOINT_FILES if fs.exists(f"{root}/{n}")]
        got.update(_download(fs, root, names, partial, uri))
        for name in names if expected else ():
            if got.get(name) != expected[name]:
                raise CheckpointDigestMismatch(_mismatch_message(uri, name, expected[name], got.get(name)))
        return cache_key(got)

    final = place_in_cache(base, fill, lambda entry: _cached_entry(entry, got, uri, base) is not None)
    if final is None:
        raise CheckpointError(f"could not put checkpoint {uri} into the cache folder "
                              f"{os.path.join(base, cache_key(got))}")
    _LOG.info("checkpoint %s: downloaded and verified into %s", uri, final)
    return final


def place_in_cache(base: str, fill: Callable[[str], str], reuse: Callable[[str], bool]) -> str | None:
    """An entry of the machine cache folder ``base``, filled once: ``fill(folder)`` downloads into
    a private ``.tmp-*`` folder and returns the entry's name; the folder is then renamed to
    ``base/<name>`` in one step, so an entry is whole or absent and never replaced under a
    reader. A process that loses the race uses the winner's entry where ``reuse(entry)`` accepts
    it (an entry it refuses it may discard; the rename is then tried again). Temp folders left by
    killed processes are swept first. Returns the entry's path, or None when none could be put
    in place."""
    os.makedirs(base, exist_ok=True)
    _sweep_stale_partials(base)
    partial = tempfile.mkdtemp(prefix=".tmp-", dir=base)
    try:
        final = os.path.join(base, fill(partial))
        for _ in range(3):
            try:
                os.rename(partial, final)
                partial = None
                return final
            except OSError:   # another process put the same entry in place first
                if reuse(final):
                    return final
        return None
    finally:
        if partial:
            shutil.rmtree(partial, ignore_errors=True)


def download_file(fs, remote: str, local: str, what: str) -> None:
    """One file from ``fs`` to a local path, transient storage errors retried."""
    retry(lambda: fs.get_file(remote, local), f"downloading {what}")
