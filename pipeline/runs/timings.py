"""Read how long a run took from the JSON its launcher leaves in the run directory. Beam-free.

The launcher on main writes ``<output>/<run_id>/_MANIFEST.json`` last (pipeline/runs/publish.py); its
``timings`` object holds ``started`` and ``finished`` (ISO 8601) and ``seconds``, and ``counts``
holds ``labelled``. That is the layout read first. Other keys are accepted so a hand-made or
older summary works too; :func:`read_run_timings` lists them.
"""
from __future__ import annotations

import datetime
import json

import fsspec

from pipeline.runs.publish import MANIFEST_NAME as MANIFEST_FILE
TIMING_FILES = (MANIFEST_FILE, "_RUN_SUMMARY.json", "run_summary.json")
_WALL_KEYS = ("seconds", "wall_seconds", "elapsed_seconds")
_START_KEYS = ("started", "started_at")
_FINISH_KEYS = ("finished", "finished_at")


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


def _first(sources: list[dict], keys: tuple[str, ...], convert):
    for source in sources:
        for key in keys:
            value = convert(source.get(key))
            if value is not None:
                return value
    return None


def read_run_timings(run_dir: str) -> dict | None:
    """What the first timing file in ``run_dir`` says, or None when none has a wall time or stage times.

    Looked up in ``timings`` first, then at the top level: wall time ``seconds`` / ``wall_seconds``
    / ``elapsed_seconds``, else ``finished`` - ``started`` (also ``started_at`` / ``finished_at``);
    per-stage seconds from a ``stages`` object ({"name": seconds}); labelled clips from
    ``counts.labelled``, ``tables.clips`` or a top-level ``clips_labelled``. Returns
    ``{"file", "wall_seconds", "started_at", "finished_at", "clips", "stages"}`` (None / {} when absent).
    """
    fs, root = fsspec.core.url_to_fs(run_dir)
    for name in TIMING_FILES:
        path = f"{root.rstrip('/')}/{name}"
        if not fs.isfile(path):
            continue
        try:
            data = json.loads(fs.cat_file(path))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
        sources = [timings, data]
        started = _first(sources, _START_KEYS, _parse_time)
        finished = _first(sources, _FINISH_KEYS, _parse_time)
        wall = _first(sources, _WALL_KEYS, _number)
        if wall is None and started and finished:
            wall = (finished - started).total_seconds()
        raw_stages = timings.get("stages") if isinstance(timings.get("stages"), dict) else data.get("stages")
        stages = {str(k): _number(v) for k, v in (raw_stages or {}).items() if _number(v) is not None}
        if wall is None and not stages:
            continue
        clips = _first([data.get("counts") or {}], ("labelled",), _number)
        if clips is None:
            clips = _first([data.get("tables") or {}, data], ("clips", "clips_labelled"), _number)
        return {"file": name, "wall_seconds": wall, "started_at": started, "finished_at": finished,
                "clips": clips, "stages": stages}
    return None
