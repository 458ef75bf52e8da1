"""All-or-nothing publication of a run, and reruns that cannot lose data.

Each launch of a run id is an *attempt* with its own folder (``<output>/_runs/<run_id>/<attempt>/``,
pipeline/runs/layout.py): Beam's sinks write there, temporary files and all, while whatever an
earlier attempt published stays where it is. Only after the job succeeded and the accounting was
checked does the launcher publish (pipeline/main.py), checking its lease (pipeline/runs/lease.py)
before each step:

1. ``promote``: move the attempt's Parquet files into the table folders
   (``<output>/<table>/run_id=<run_id>/``; a rename on a local disk, a server-side copy on object
   storage: no data passes through the launcher). Their names carry the attempt id, so they never
   replace the earlier attempt's files.
2. (``--iceberg_catalog``) one commit per table replacing the run's files.
3. ``write_manifest``: ``<output>/_runs/<run_id>/_MANIFEST.json`` names the attempt and its files.
   This is the swap: readers that follow manifests (``--skip_labelled``, ``report``, ``read_table``,
   ``published_table_files``) see the old attempt or the new one, never a mix.
4. ``retire_other_attempts``: only now are the earlier attempts' files and folders removed.

A failure before step 3 leaves the previous publication intact: the Iceberg commits are undone
and the files moved out again (pipeline/main.py), and the failed attempt's folder stays for
inspection. A launcher killed at any step leaves what pipeline/runs/reconcile.py repairs: the next
launch into the output root (or ``python -m pipeline.reconcile``) brings the table folders and
the Iceberg tables back in line with the manifests. Readers that glob the table folders see
files no manifest names while a launcher publishes, and after one was killed until the next
reconciliation; the manifests and the Iceberg tables are the all-or-nothing views.

Every path here is exact (pipeline/runs/store.py): no glob is ever built from a run id, an
attempt id or an output root.
"""
from __future__ import annotations

import json
import logging
import re
import secrets
from importlib import metadata

import fsspec

from pipeline.runs import killpoint, store
from pipeline.runs.layout import (
    MANIFEST_NAME, RUNS_DIR, TABLE_NAMES, Attempt, is_run_id, manifest_path, published_table_dir,
    run_meta_dir)
from transforms.io.url_secrets import scrub_recorded

_LOG = logging.getLogger(__name__)
# Option names whose values are credentials; never written to manifests or logs.
_SECRET_NAME = re.compile(r"(secret|password|passwd|token|credential|access_key|session_key|^key$|api_key)",
                          re.IGNORECASE)
REDACTED = "<redacted>"


def _fs(url: str, storage_options: dict | None):
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def _uri(fs, path: str) -> str:
    return path if store.is_local(fs) else fs.unstrip_protocol(path)


def check_writable(output: str, storage_options: dict | None = None) -> None:
    """Write and remove a probe under the output root, so a bad --output fails at launch."""
    fs, root = _fs(output, storage_options)
    probe = f"{root.rstrip('/')}/.write_probe_{secrets.token_hex(4)}"
    try:
        fs.makedirs(root.rstrip("/"), exist_ok=True)
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as e:
        raise PermissionError(f"cannot write to --output {output}: {type(e).__name__}: {e}") from e


def attempt_files(attempt: Attempt, table: str, storage_options: dict | None = None) -> list[str]:
    """The Parquet files an attempt's job committed for one table (fsspec paths, sorted)."""
    fs, where = _fs(attempt.table_dir(table), storage_options)
    return store.parquet_children(fs, where)


def promote(attempt: Attempt, storage_options: dict | None = None,
            tables: tuple[str, ...] = TABLE_NAMES) -> dict[str, list[str]]:
    """Move a finished attempt's table files into the table folders (step 1), then remove the
    emptied table folders of the attempt. Returns, per table, the files' paths relative to the
    output root, as the manifest records them. On any failure (a kill aside) the files already
    moved are moved back, and the error is raised. ``tables``: the label tables, or another
    table's folder (``custom_labels/classifier=<id>``)."""
    fs, root = _fs(attempt.output, storage_options)
    root = root.rstrip("/")
    moved: list[tuple[str, str]] = []
    files: dict[str, list[str]] = {}
    try:
        for table in tables:
            _, target = _fs(published_table_dir(attempt.output, attempt.run_id, table), storage_options)
            fs.makedirs(target, exist_ok=True)
            files[table] = []
            for source in attempt_files(attempt, table, storage_options):
                dest = f"{target.rstrip('/')}/{source.rsplit('/', 1)[-1]}"
                store.move_file(fs, source, dest)
                moved.append((source, dest))
                files[table].append(dest[len(root) + 1:])
                if len(moved) == 1:
                    killpoint.reached("after-first-move")
        for table in tables:   # now empty of Parquet (Beam's leftovers, local folders)
            _, emptied = _fs(attempt.table_dir(table), storage_options)
            store.remove_tree(fs, emptied)
    except BaseException:
        _move_back(fs, moved)
        raise
    return files


def unpromote(attempt: Attempt, files: dict[str, list[str]], storage_options: dict | None = None) -> None:
    """Undo ``promote`` when a later publication step failed (best effort)."""
    fs, root = _fs(attempt.output, storage_options)
    moved = []
    for table, paths in files.items():
        _, folder = _fs(attempt.table_dir(table), storage_options)
        moved += [(f"{folder}/{p.rsplit('/', 1)[-1]}", f"{root.rstrip('/')}/{p}") for p in paths]
    _move_back(fs, moved)


def _move_back(fs, moved: list[tuple[str, str]]) -> None:
    """Move each (source, dest) pair's file from dest back to source, last first (best effort:
    reconciliation, pipeline/runs/reconcile.py, moves back what stays behind)."""
    for source, dest in reversed(moved):
        try:
            store.move_file(fs, dest, source)
        except Exception as e:
            _LOG.error("could not move %s back after a failed publication: %s", dest, e)


def write_manifest(output: str, run_id: str, manifest: dict, storage_options: dict | None = None) -> str:
    """Step 3, the swap: one small object, written whole (a PUT on object storage, a rename on a
    local disk), so it is the old manifest or the new one."""
    return write_json_document(manifest_path(output, run_id), manifest, storage_options)


def write_json_document(url: str, document: dict, storage_options: dict | None = None) -> str:
    """Write one small JSON object whole (a PUT on object storage, a rename on a local disk):
    readers see the old document or the new one. Every manifest is written this way, and every
    string in it scrubbed of URL user-info and credential query parameters on the way (a last
    guard: parts added after a manifest was built, such as its files and Iceberg record, too)."""
    fs, final = _fs(url, storage_options)
    body = json.dumps(scrub_recorded(document), indent=2, sort_keys=True, default=str).encode()
    store.put_whole(fs, final, body)
    return final


def read_manifest(output: str, run_id: str, storage_options: dict | None = None) -> dict | None:
    """The published manifest of a run id, or None when the run id never published."""
    return read_json_document(manifest_path(output, run_id), storage_options)


def read_json_document(url: str, storage_options: dict | None = None) -> dict | None:
    """A JSON document written by write_json_document, or None when there is none."""
    fs, path = _fs(url, storage_options)
    fs.invalidate_cache(path.rsplit("/", 1)[0])
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None


def retire_other_attempts(output: str, run_id: str, manifest: dict,
                          storage_options: dict | None = None, check=None,
                          tables: tuple[str, ...] = TABLE_NAMES, meta_dir: str | None = None) -> list[str]:
    """Step 4: remove every file of the run's table folders that the manifest does not name, and
    every attempt folder but the published one. Returns what was removed.

    The caller holds the run id's lease, so no other attempt of it is running. ``check``, called
    before each removal, raises to stop (the lease's ``check``). Fenced by attempt: when the
    manifest on the store no longer names ``manifest``'s attempt (a newer launcher published),
    nothing is removed. ``tables`` and ``meta_dir`` (the folder of the manifest and the
    attempts): as for ``promote``, for tables published under a manifest of their own."""
    fs, root = _fs(output, storage_options)
    root = root.rstrip("/")
    check = check or (lambda: None)
    meta_dir = meta_dir or run_meta_dir(output, run_id)
    current = read_json_document(f"{meta_dir}/{MANIFEST_NAME}", storage_options)
    if current is None or current.get("attempt") != manifest["attempt"]:
        _LOG.warning("run %s: the manifest names attempt %s, not %s: not retiring anything", run_id,
                     (current or {}).get("attempt"), manifest["attempt"])
        return []
    keep = {f"{root}/{p}" for paths in manifest["files"].values() for p in paths}
    removed = []
    for table in tables:
        _, folder = _fs(published_table_dir(output, run_id, table), storage_options)
        for name, info in sorted(store.children(fs, folder).items()):
            path = info["name"]
            if path in keep:
                continue
            check()
            if info.get("type") == "directory":
                store.remove_tree(fs, path)
            else:
                store.remove_file(fs, path)
            removed.append(path)
            if len(removed) == 1:
                killpoint.reached("during-retirement")
    _, meta = _fs(meta_dir, storage_options)
    for name, info in sorted(store.children(fs, meta).items()):
        if not name.startswith("_") and name != manifest["attempt"]:
            check()
            store.remove_tree(fs, info["name"])
            removed.append(info["name"])
    return removed


def finished_runs(output: str, storage_options: dict | None = None) -> list[str]:
    """Run ids under an output root that were published (hold a manifest)."""
    fs, root = _fs(output, storage_options)
    runs = f"{root.rstrip('/')}/{RUNS_DIR}"
    found = store.files_below(fs, runs)
    return sorted(relative.split("/")[0] for relative in found
                  if relative.count("/") == 1 and relative.endswith(f"/{MANIFEST_NAME}")
                  and is_run_id(relative.split("/")[0]))


def published_files(output: str, run_id: str, table: str, storage_options: dict | None = None,
                    manifest: dict | None = None) -> list[str]:
    """URIs of a published run's files of one table, as its manifest names them ([] when the
    run id never published)."""
    manifest = manifest if manifest is not None else read_manifest(output, run_id, storage_options)
    if manifest is None:
        return []
    return output_uris(output, manifest["files"].get(table, []), storage_options)


def output_uris(output: str, relatives: list[str], storage_options: dict | None = None) -> list[str]:
    """URIs of paths relative to the output root, as the manifests record them (a local root
    gives absolute paths)."""
    fs, root = _fs(output, storage_options)
    return [_uri(fs, f"{root.rstrip('/')}/{p}") for p in relatives]


def published_stats_files(output: str, run_id: str, storage_options: dict | None = None,
                          manifest: dict | None = None) -> list[str]:
    """URIs of a published run's per-shard statistics files."""
    manifest = manifest if manifest is not None else read_manifest(output, run_id, storage_options)
    if manifest is None:
        return []
    fs, root = _fs(output, storage_options)
    attempt = Attempt(output, run_id, manifest["attempt"])
    _, where = _fs(attempt.shard_stats_dir, storage_options)
    return [_uri(fs, p) for p in store.parquet_children(fs, where)]


def _finished_files(output: str, which, exclude_run_id: str | None,
                    storage_options: dict | None) -> list[str]:
    files = []
    for run_id in finished_runs(output, storage_options):
        if run_id != exclude_run_id:
            files.extend(which(output, run_id, storage_options))
    return files


def finished_clip_files(output: str, exclude_run_id: str | None = None,
                        storage_options: dict | None = None) -> list[str]:
    """URIs of the clips-table files of every published run under ``output`` (--skip_labelled).
    Only listed here; the pipeline's workers read them."""
    return _finished_files(output, lambda o, r, so: published_files(o, r, "clips", so), exclude_run_id,
                           storage_options)


def published_table_files(output: str, table: str, storage_options: dict | None = None) -> list[str]:
    """URIs of every file of ``table`` that a published run's manifest names: the files a reader
    that must see published rows only, at every moment, reads (docs/lakehouse.md). A run
    being published, a launcher killed midway, an earlier attempt being retired: none of their
    files is listed."""
    return _finished_files(output, lambda o, r, so: published_files(o, r, table, so), None, storage_options)


def finished_shard_stats_files(output: str, exclude_run_id: str | None = None,
                               storage_options: dict | None = None) -> list[str]:
    """URIs of the per-shard statistics files of every published run under ``output``: which
    version of a shard held how many audio members (--skip_labelled skips whole shards with them)."""
    return _finished_files(output, published_stats_files, exclude_run_id, storage_options)


def redact(value):
    """A copy of a JSON-like value with every credential-named entry replaced."""
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_NAME.search(str(k)) and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def package_versions() -> dict[str, str]:
    names = ["audio-labelling", "apache-beam", "mindspore", "mindnlp", "pyarrow", "numpy",
             "scipy", "soundfile", "soxr", "fsspec"]
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
