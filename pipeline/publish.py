"""All-or-nothing publication of a run.

A run writes its tables under ``<output>/<run_id>/`` through Beam's file sinks (temp files,
then rename on commit) and, only after the tables were read back and the accounting checked,
writes ``_MANIFEST.json`` into the same folder, last. A run folder without a manifest is not a
finished run: readers (``--skip_labelled``, ``report``) ignore it. Rerunning a run id first
removes the old manifest (so the old run stops looking finished), then the old files, so no
stale shard survives into the new run.
"""
from __future__ import annotations

import json
import re
import secrets
from importlib import metadata

import fsspec

from pipeline.run_layout import MANIFEST_NAME, run_root, shard_stats_dir, table_dir
# Option names whose values are credentials; never written to manifests or logs.
_SECRET_NAME = re.compile(r"(secret|password|passwd|token|credential|access_key|session_key|^key$|api_key)",
                          re.IGNORECASE)
REDACTED = "<redacted>"


def _fs(url: str, storage_options: dict | None):
    return fsspec.core.url_to_fs(url, **(storage_options or {}))


def begin_run(output: str, run_id: str, storage_options: dict | None = None) -> None:
    """Clear what an earlier attempt of this run id left, manifest first."""
    fs, root = _fs(run_root(output, run_id), storage_options)
    manifest = f"{root}/{MANIFEST_NAME}"
    if fs.exists(manifest):
        fs.rm(manifest)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def check_writable(output: str, storage_options: dict | None = None) -> None:
    """Write and remove a probe under the output root, so a bad --output fails at launch."""
    fs, root = _fs(output, storage_options)
    probe = f"{root.rstrip('/')}/.write_probe_{secrets.token_hex(4)}"
    try:
        fs.makedirs(root.rstrip("/"), exist_ok=True)
        fs.pipe(probe, b"")
        fs.rm(probe)
    except Exception as e:
        raise PermissionError(f"cannot write to --output {output}: {type(e).__name__}: {e}") from e


def write_manifest(output: str, run_id: str, manifest: dict, storage_options: dict | None = None) -> str:
    fs, root = _fs(run_root(output, run_id), storage_options)
    body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
    tmp, final = f"{root}/{MANIFEST_NAME}.tmp", f"{root}/{MANIFEST_NAME}"
    fs.pipe(tmp, body)
    fs.mv(tmp, final)
    return final


def read_manifest(run_dir: str, storage_options: dict | None = None) -> dict | None:
    fs, root = _fs(run_dir, storage_options)
    path = f"{root.rstrip('/')}/{MANIFEST_NAME}"
    if not fs.exists(path):
        return None
    return json.loads(fs.cat(path))


def finished_runs(output: str, storage_options: dict | None = None) -> list[str]:
    """Run ids under an output root that were published (hold a manifest)."""
    fs, root = _fs(output, storage_options)
    if not fs.exists(root):
        return []
    found = fs.glob(f"{root.rstrip('/')}/*/{MANIFEST_NAME}")
    return sorted(p.rstrip("/").split("/")[-2] for p in found)


def _finished_files(output: str, folder, exclude_run_id: str | None,
                    storage_options: dict | None) -> list[str]:
    fs, root = _fs(output, storage_options)
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    files = []
    for run_id in finished_runs(output, storage_options):
        if run_id == exclude_run_id:
            continue
        _, where = _fs(folder(output, run_id), storage_options)
        for path in sorted(fs.glob(f"{where.rstrip('/')}/*.parquet")):
            files.append(path if local else fs.unstrip_protocol(path))
    return files


def finished_clip_files(output: str, exclude_run_id: str | None = None,
                        storage_options: dict | None = None) -> list[str]:
    """URIs of the clips-table files of every published run under ``output`` (--skip_labelled).
    Only listed here; the pipeline's workers read them."""
    return _finished_files(output, lambda o, r: table_dir(o, r, "clips"), exclude_run_id,
                           storage_options)


def finished_shard_stats_files(output: str, exclude_run_id: str | None = None,
                               storage_options: dict | None = None) -> list[str]:
    """URIs of the per-shard statistics files of every published run under ``output``: which
    version of a shard held how many audio members (--skip_labelled skips whole shards with them)."""
    return _finished_files(output, shard_stats_dir, exclude_run_id, storage_options)


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
