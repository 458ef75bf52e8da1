"""A run's own record of when it ran and how long its parts took, written beside its tables. Beam-free.

``<output>/<run_id>/_RUN_SUMMARY.json``::

    {"run_id": "...", "started_at": "2024-05-01T10:00:00+00:00", "finished_at": "...",
     "wall_seconds": 412.5, "discovered": 2000, "clips_labelled": 1996, "inputs_errored": 4,
     "audio_seconds": 9980.0, "timings": {"validate_and_inspect": 3.1, "pipeline": 405.2, "read_back": 4.2}}

pipeline.report reads this file (or a ``_MANIFEST.json`` holding the same keys) for its throughput
section; :func:`read_run_timings` lists every key it understands.
"""
from __future__ import annotations

import datetime
import json

import fsspec

RUN_SUMMARY_FILE = "_RUN_SUMMARY.json"
TIMING_FILES = (RUN_SUMMARY_FILE, "_MANIFEST.json", "run_summary.json", "summary.json")
_WALL_KEYS = ("wall_seconds", "elapsed_seconds", "wall_time_seconds")
_CLIP_KEYS = ("clips_labelled", "clips", "labelled")


def _iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.timezone.utc).isoformat()


def write_run_summary(output: str, run_id: str, *, started_at: datetime.datetime,
                      finished_at: datetime.datetime, discovered: int, clips_labelled: int,
                      inputs_errored: int, audio_seconds: float | None = None,
                      timings: dict[str, float] | None = None, extra: dict | None = None) -> str:
    """Writes ``<output>/<run_id>/_RUN_SUMMARY.json`` (any fsspec URL) and returns its path."""
    record = {
        "run_id": run_id,
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "wall_seconds": (finished_at - started_at).total_seconds(),
        "discovered": int(discovered),
        "clips_labelled": int(clips_labelled),
        "inputs_errored": int(inputs_errored),
        "audio_seconds": None if audio_seconds is None else float(audio_seconds),
        "timings": {k: float(v) for k, v in (timings or {}).items()},
    }
    record.update(extra or {})
    path = f"{output.rstrip('/')}/{run_id}/{RUN_SUMMARY_FILE}"
    with fsspec.open(path, "w") as f:
        json.dump(record, f, indent=2)
    return path


def _parse_time(value) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_run_timings(run_dir: str) -> dict | None:
    """What the first timing file found in ``run_dir`` says about time, or None when there is none.

    Understood keys, at the top level or inside a ``timings`` object: ``wall_seconds`` /
    ``elapsed_seconds`` / ``wall_time_seconds``, or ``started_at`` + ``finished_at`` (ISO 8601);
    ``clips_labelled`` / ``clips`` / ``labelled``; ``audio_seconds``; and any other number inside
    ``timings`` is taken as seconds spent in the stage of that name. Returns
    ``{"file", "wall_seconds", "started_at", "finished_at", "clips", "audio_seconds", "stages"}``
    (absent values None / {}), or None when no file has a wall time or a stage time.
    """
    fs, root = fsspec.core.url_to_fs(run_dir)
    for name in TIMING_FILES:
        path = f"{root.rstrip('/')}/{name}"
        if not fs.isfile(path):
            continue
        try:
            with fs.open(path, "r") as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        nested = data.get("timings") if isinstance(data.get("timings"), dict) else {}
        merged = {**nested, **data}
        started, finished = _parse_time(merged.get("started_at")), _parse_time(merged.get("finished_at"))
        wall = next((_number(merged[k]) for k in _WALL_KEYS if _number(merged.get(k)) is not None), None)
        if wall is None and started and finished:
            wall = (finished - started).total_seconds()
        stages = {k: _number(v) for k, v in nested.items()
                  if _number(v) is not None and k not in _WALL_KEYS + _CLIP_KEYS + ("audio_seconds",)}
        if wall is None and not stages:
            continue
        clips = next((_number(merged[k]) for k in _CLIP_KEYS if _number(merged.get(k)) is not None), None)
        return {"file": name, "wall_seconds": wall, "started_at": started, "finished_at": finished,
                "clips": clips, "audio_seconds": _number(merged.get("audio_seconds")), "stages": stages}
    return None
