"""Exact-path operations on a run's storage (fsspec filesystems), never globs.

fsspec's ``glob``, ``mv``, ``copy`` and ``rm`` expand ``*``, ``?`` and ``[`` in the paths they are
given, so a path built from a user's string (an output root, a run id) could name other runs'
files, or none, or recurse without end (``s3fs`` with ``'*'``). Every listing, move and removal
in a run's life goes through these functions instead: listings are one folder's children or a
prefix's objects, matched by name in Python; a move is one file to one file; a removal is one
file, or the files a prefix listing found.

Times are the store's own (object modification times): the launcher's clock is never compared
with them, ``storage_now`` asks the store for its time instead.
"""
from __future__ import annotations

import datetime
import os
import secrets
import shutil


def is_local(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def _fresh(fs, path: str) -> None:
    # fsspec filesystems are shared in a process and cache listings: decide from the store as
    # it is now, not from an earlier run's listing.
    fs.invalidate_cache(path)


def children(fs, folder: str) -> dict[str, dict]:
    """The entries directly in ``folder`` by name (``{}`` when it does not exist)."""
    folder = folder.rstrip("/")
    _fresh(fs, folder)
    try:
        entries = fs.ls(folder, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    found = {}
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry["name"].rstrip("/") != folder:   # some stores list a folder as its own child
            found[name] = entry
    return found


def parquet_children(fs, folder: str) -> list[str]:
    """The Parquet files directly in ``folder`` (sorted paths), as the store holds them now."""
    return sorted(info["name"] for name, info in children(fs, folder).items()
                  if name.endswith(".parquet") and info.get("type") == "file")


def files_below(fs, folder: str) -> dict[str, dict]:
    """Every file under ``folder`` (any depth) by its path relative to ``folder``."""
    folder = folder.rstrip("/")
    _fresh(fs, folder)
    try:
        found = fs.find(folder, detail=True)
    except FileNotFoundError:
        return {}
    return {path[len(folder) + 1:]: info for path, info in found.items()
            if path.startswith(folder + "/") and info.get("type") != "directory"}


def modified(info: dict) -> float | None:
    """An entry's modification time (seconds since the epoch, the store's clock), or None."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        value = info.get(key)
        if isinstance(value, datetime.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)).timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def file_info(fs, path: str) -> dict | None:
    _fresh(fs, path)
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None


def storage_now(fs, folder: str) -> float:
    """The store's clock now: the modification time of a probe written (and removed) in ``folder``.
    A lease's age is this minus the lease's own modification time, so launchers whose clocks
    disagree by minutes still agree on whether a lease expired."""
    probe = f"{folder.rstrip('/')}/_CLOCK-{secrets.token_hex(6)}"
    fs.makedirs(folder.rstrip("/"), exist_ok=True)
    fs.pipe_file(probe, b"")
    try:
        stamp = modified(file_info(fs, probe) or {})
    finally:
        try:
            fs.rm_file(probe)
        except FileNotFoundError:
            pass
    if stamp is None:
        raise OSError(f"the store under {folder} reports no modification times: leases cannot be judged")
    return stamp


def move_file(fs, source: str, dest: str) -> None:
    """Move one file to one path: a rename on a local disk, a server-side copy then a delete on
    object storage. Neither path is expanded as a pattern."""
    parent = dest.rsplit("/", 1)[0]
    if is_local(fs):
        os.makedirs(parent, exist_ok=True)
        os.replace(source, dest)
        return
    fs.cp_file(source, dest)
    fs.rm_file(source)
    _fresh(fs, parent)


def put_whole(fs, path: str, body: bytes) -> None:
    """Write one small file whole: a reader sees the old content or the new, never an empty or
    partial file. On a local disk a temporary file beside it (``<name>.tmp-<hex>``, removed again
    if the write fails) renamed over it; on object storage one PUT, whole by nature."""
    if not is_local(fs):
        fs.pipe_file(path, body)
        return
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    try:
        fs.pipe_file(tmp, body)
        move_file(fs, tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def remove_file(fs, path: str) -> None:
    fs.rm_file(path)


def _folders_below(fs, folder: str) -> list[str]:
    """Every folder under ``folder``, empty ones included, listed level by level: a recursive
    find lists folders only above files, and SeaweedFS keeps an emptied folder listed (a
    launcher's ``_progress/``, say) until it is deleted itself."""
    found, todo = [], [folder]
    while todo:
        for info in children(fs, todo.pop()).values():
            if info.get("type") == "directory":
                found.append(info["name"].rstrip("/"))
                todo.append(found[-1])
    return found


def remove_tree(fs, folder: str) -> list[str]:
    """Remove ``folder`` and everything under it; returns the files removed (``[]`` when absent)."""
    folder = folder.rstrip("/")
    files = [f"{folder}/{relative}" for relative in sorted(files_below(fs, folder))]
    if is_local(fs):
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        return files
    for path in files:
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            pass
    # Stores with real folders behind an S3 face (SeaweedFS's filer) keep the emptied folders
    # listed until they are deleted too; on S3 proper there are none and the deletes are no-ops.
    left = _folders_below(fs, folder)
    parents = {f.rsplit("/", 1)[0] for f in files}
    for path in list(parents):
        while path.startswith(folder + "/"):
            path = path.rsplit("/", 1)[0]
            parents.add(path)
    for path in sorted(set(left) | parents | {folder}, key=lambda p: p.count("/"), reverse=True):
        try:
            fs.rm_file(path)
        except (FileNotFoundError, OSError):
            pass
    _fresh(fs, folder)
    return files
