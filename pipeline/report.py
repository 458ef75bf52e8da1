"""One self-contained HTML report of a finished run, with its charts beside it as PNG files. Beam-free.

    python -m pipeline.report --run <output>/_runs/<run_id> [--out report_dir]
    python -m pipeline.report --iceberg_catalog NAME [--iceberg_namespace NS] [--run_id ID]
        [--output ROOT] [--out report_dir]

Writes ``<out>/index.html`` (every chart embedded as a base64 PNG data URI, so the file can be
mailed or attached on its own) and the same charts as ``<out>/*.png``. ``--out`` defaults to
``<run>/report`` for a local run folder and to ``./report_<run_id>`` for a remote one.

Charts: top-1 label frequency, top-1 score histogram, errors by stage and type, windows per clip
(from a ``num_windows`` clips column, else from a ``windows`` or ``segments`` table with a
``clip_id`` column; skipped with a note when neither exists) and throughput (the run's own clock:
the wall time and the launcher's stages in a timing file in the run directory, normally the
``_MANIFEST.json`` a finished run ends with; see pipeline/runs/timings.py; skipped with a note
otherwise). The summary gives the manifest's counts (discovered, labelled, errored, skipped) where
there is one, and the page ends with the run's options and inputs. A run directory without
``_MANIFEST.json`` is reported all the same, with a warning that the run may not have finished.

From the Iceberg tables runs were committed to (``--iceberg_catalog``; ``--output`` names the local
output root of an unconfigured, embedded catalog, as for run_pipeline.py): run ``--run_id``'s rows,
with the counts its snapshot summary records, or without ``--run_id`` the archive's current labels
(the latest row per clip over all runs) and the errors of inputs no later run labelled. The
throughput chart is left out there (snapshots carry counts, not timings). ``--out`` defaults to
``./report_<run_id>`` or ``./report_current``.
"""
from __future__ import annotations

import argparse
import base64
import collections
import datetime
import html
import io
import json
import os
import sys
from dataclasses import dataclass

import fsspec

try:
    import matplotlib
except ImportError as e:   # an optional extra: workers never draw charts
    raise ImportError("pipeline.report needs matplotlib: pip install '.[report]'") from e

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipeline.lakehouse.iceberg_source import (add_iceberg_source_arguments, check_iceberg_source_arguments,  # noqa: E402
                                     open_source_catalog)
from pipeline.runs.timings import MANIFEST_FILE, TIMING_FILES, read_run_timings  # noqa: E402
from pipeline.runs.table_files import read_optional_table  # noqa: E402
from schemas.tables import TABLES  # noqa: E402

TOP_LABELS = 25
# What the charts and the summary table use; never the score vectors or embeddings.
REPORT_COLUMNS = {
    "clips": ["labels", "num_windows", "duration_seconds", "labelled_at", "run_id", "model_id",
              "model_sha256", "activation"],
    "errors": ["stage", "error_type", "source_uri", "message"],
}
WINDOW_TABLES = ("windows", "segments")


@dataclass
class Chart:
    name: str          # file stem
    title: str
    png: bytes | None  # None: skipped
    note: str = ""


def _figure(width: float = 9.0, height: float = 5.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _hbar(ax, names: list[str], counts: list, color: str, integer: bool = True) -> None:
    y = np.arange(len(names))
    ax.barh(y, counts, color=color)
    ax.set_yticks(y, [n if len(n) <= 45 else n[:42] + "..." for n in names])
    ax.invert_yaxis()
    for yi, c in zip(y, counts):
        ax.text(c, yi, f" {c}", va="center", fontsize=8)
    if integer:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)


# ---------------------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------------------
def top1(clips: pa.Table) -> tuple[list[str], np.ndarray]:
    """Top-1 label and score of every clip that has at least one label."""
    names, scores = [], []
    for labels in clips.column("labels").to_pylist() if clips.num_rows else []:
        if labels:
            names.append(labels[0]["label"])
            scores.append(labels[0]["score"])
    return names, np.asarray(scores, dtype=np.float64)


def label_frequency_chart(clips: pa.Table) -> Chart:
    names, _ = top1(clips)
    title = "Top-1 label frequency"
    if not names:
        return Chart("label_frequency", title, None, "no clip has a label: nothing to count")
    counts = collections.Counter(names).most_common()
    shown = counts[:TOP_LABELS]
    rest = counts[TOP_LABELS:]
    bars = [(n, c) for n, c in shown] + ([(f"({len(rest)} other labels)", sum(c for _, c in rest))] if rest else [])
    fig = _figure(9.0, max(3.0, 0.3 * len(bars) + 1.2))
    ax = fig.add_subplot()
    _hbar(ax, [b[0] for b in bars], [b[1] for b in bars], "#3b75af")
    ax.set_xlabel("clips whose highest-scoring label this is")
    ax.set_title(f"{title} ({len(names)} clips, {len(counts)} distinct labels)")
    return Chart("label_frequency", title, _png(fig))


def score_histogram_chart(clips: pa.Table) -> Chart:
    _, scores = top1(clips)
    title = "Top-1 score distribution"
    if scores.size == 0:
        return Chart("top1_scores", title, None, "no clip has a label: no scores to plot")
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(scores, bins=np.linspace(0.0, 1.0, 21), color="#4c9a5f", edgecolor="white")
    ax.axvline(float(np.median(scores)), color="black", linestyle="--", linewidth=1,
               label=f"median {np.median(scores):.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("score of the clip's highest-scoring label")
    ax.set_ylabel("clips")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title} ({scores.size} clips)")
    return Chart("top1_scores", title, _png(fig))


def errors_chart(errors: pa.Table) -> Chart:
    title = "Errors by stage and type"
    if errors.num_rows == 0:
        return Chart("errors", title, None, "no errors in this run")
    pairs = collections.Counter(zip(errors.column("stage").to_pylist(), errors.column("error_type").to_pylist()))
    bars = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
    fig = _figure(9.0, max(3.0, 0.35 * len(bars) + 1.2))
    ax = fig.add_subplot()
    stages = sorted({s for (s, _), _ in bars})
    palette = matplotlib.colormaps["tab10"]
    colors = {s: palette(i % 10) for i, s in enumerate(stages)}
    y = np.arange(len(bars))
    ax.barh(y, [c for _, c in bars], color=[colors[s] for (s, _), _ in bars])
    ax.set_yticks(y, [f"{s} / {t}" for (s, t), _ in bars])
    ax.invert_yaxis()
    for yi, (_, c) in zip(y, bars):
        ax.text(c, yi, f" {c}", va="center", fontsize=8)
    ax.set_xlabel("inputs")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{title} ({errors.num_rows} inputs not labelled)")
    return Chart("errors", title, _png(fig))


def windows_per_clip(run: str | None, clips: pa.Table) -> tuple[np.ndarray | None, str]:
    if "num_windows" in clips.column_names:
        values = [v for v in clips.column("num_windows").to_pylist() if v is not None]
        return np.asarray(values, dtype=np.int64), "the clips table's num_windows column"
    for name in WINDOW_TABLES if run is not None else ():
        table = read_optional_table(run, name, ["clip_id"])
        if table is not None and "clip_id" in table.column_names:
            counts = collections.Counter(table.column("clip_id").to_pylist())
            return np.asarray(list(counts.values()), dtype=np.int64), f"rows per clip_id of the {name} table"
    return None, ""


def window_bins(top: int, most: int = 40) -> np.ndarray:
    """Bin edges for whole window counts 1..top: at most about ``most`` bins of equal width, each
    centred on whole numbers, the last one reaching past ``top`` so the longest clip is drawn."""
    width = max(1, -(-top // most))
    return np.arange(0.5, top + width + 0.5, width)


def windows_chart(run: str | None, clips: pa.Table) -> Chart:
    title = "Windows per clip"
    values, source = windows_per_clip(run, clips)
    if values is None:
        return Chart("windows_per_clip", title, None,
                     "skipped: the clips table has no num_windows column and the run has no windows/segments "
                     "table (this run labelled each clip as one window)")
    if values.size == 0:
        return Chart("windows_per_clip", title, None, f"skipped: {source} is empty")
    fig = _figure()
    ax = fig.add_subplot()
    top = int(values.max())
    ax.hist(values, bins=window_bins(top), color="#9467bd", edgecolor="white")
    ax.set_xlabel("windows")
    ax.set_ylabel("clips")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title} (mean {values.mean():.2f}, max {top})")
    return Chart("windows_per_clip", title, _png(fig), f"Counted from {source}.")


def run_rates(timings: dict | None, manifest: dict | None, clips: pa.Table) -> list[str]:
    """The run's throughput from its own clock (the manifest's wall time and counts): clips, audio
    seconds and windows per second. Never from ``labelled_at``: rows are stamped as they are
    written, which on most runners is all at the end."""
    if not timings or not timings["wall_seconds"]:
        return []
    wall = timings["wall_seconds"]
    figures = (manifest or {}).get("figures") or {}
    n_clips = timings["clips"] if timings["clips"] is not None else clips.num_rows
    audio = figures.get("audio_seconds")
    if audio is None and clips.num_rows:   # a run from before the manifest's figures
        audio = float(np.nansum(np.asarray(clips.column("duration_seconds").to_pylist(), dtype=np.float64)))
    rates = [f"{n_clips / wall:.2f} clips/s over {wall:.1f} s"]
    if audio:
        rates.append(f"{audio / wall:.1f} s of audio per second")
    if figures.get("windows_scored"):
        rates.append(f"{figures['windows_scored'] / wall:.2f} windows/s")
    return rates


def throughput_chart(clips: pa.Table, timings: dict | None, manifest: dict | None = None) -> Chart:
    title = "Throughput"
    if timings is None:
        return Chart("throughput", title, None,
                     f"skipped: no timing file ({', '.join(TIMING_FILES)}) with a wall time or stage times in the "
                     "run directory")
    rates = run_rates(timings, manifest, clips)
    stages = dict(timings["stages"]) or {"run (wall time)": timings["wall_seconds"]}
    fig = _figure(9.0, max(2.6, 0.45 * len(stages) + 1.4))
    ax = fig.add_subplot()
    # One bar per stage, laid end to end on the run's timeline (a Gantt chart of the launcher's clock).
    at = 0.0
    names = list(stages)
    for i, name in enumerate(names):
        ax.barh(i, stages[name], left=at, color=matplotlib.colormaps["tab10"](i % 10))
        ax.text(at + stages[name], i, f" {stages[name]:.1f} s", va="center", fontsize=8)
        at += stages[name]
    ax.set_yticks(np.arange(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, at * 1.15 if at > 0 else 1)
    ax.set_xlabel("seconds since the run started")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{title}: " + ("; ".join(rates) if rates else "no wall time recorded"))
    note = (("; ".join(rates) + f" (from {timings['file']}; stages by the launcher's clock).") if rates else
            f"{timings['file']} records no wall time.")
    return Chart("throughput", title, _png(fig), note)


# ---------------------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;
font-size:.9em;vertical-align:top}th{background:#f4f4f4}img{max-width:100%;border:1px solid #eee}
td:first-child{white-space:nowrap}.note{color:#666;font-style:italic}.warning{background:#fff3cd;padding:.5em;border:1px solid #e0c36a}code{background:#f4f4f4;padding:0 .2em}
"""


def _table(header: list[str] | None, rows: list[list]) -> str:
    """An HTML table; ``header`` None: no header row (a two-column list of facts)."""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _accounting_rows(clips: pa.Table, errors: pa.Table, manifest: dict | None) -> list[list]:
    """Discovered / labelled / errored / skipped: the run's own counts when its manifest has them
    (an incremental run's skipped clips have no rows), else what the tables hold."""
    counts = (manifest or {}).get("counts") or {}
    if "discovered" not in counts:
        return [["clips labelled", clips.num_rows], ["inputs not labelled (errors)", errors.num_rows]]
    skipped = counts.get("skipped", 0)
    shards = ((manifest or {}).get("figures") or {}).get("shards_skipped")
    return [["inputs discovered", counts["discovered"]],
            ["clips labelled", counts.get("labelled", clips.num_rows)],
            ["inputs not labelled (errors)", counts.get("errored", errors.num_rows)],
            ["clips skipped (labelled the same way by an earlier run)",
             f"{skipped}" + (f" ({shards} whole tar shard(s) not read)" if shards else "")]]


def _summary_rows(run: str, clips: pa.Table, errors: pa.Table, timings: dict | None,
                  source: list[list] | None = None, manifest: dict | None = None) -> list[list]:
    rows = [*(source or [["run directory", run]]), *_accounting_rows(clips, errors, manifest)]
    meta = clips.schema.metadata or {}
    if b"schema_version" in meta:
        rows.append(["schema version", meta[b"schema_version"].decode()])
    if clips.num_rows:
        run_ids = sorted(set(clips.column("run_id").to_pylist()))
        rows.append(["run_id", ", ".join(run_ids)])
        models = collections.Counter(zip(clips.column("model_id").to_pylist(), clips.column("model_sha256").to_pylist()))
        for (model, sha), n in models.items():
            rows.append(["model", f"{model} (sha256 {str(sha)[:12]}...): {n} clips"])
        rows.append(["activation", ", ".join(sorted({str(a) for a in clips.column("activation").to_pylist()}))])
        durations = np.asarray([d for d in clips.column("duration_seconds").to_pylist() if d is not None], dtype=float)
        if durations.size:
            rows.append(["audio labelled", f"{durations.sum():.1f} s (median clip {np.median(durations):.2f} s)"])
        per_clip = [len(x or []) for x in clips.column("labels").to_pylist()]
        settings = (manifest or {}).get("settings") or {}
        selection = ", ".join(f"--{k} {settings[k]}" for k in ("threshold", "class_thresholds")
                              if settings.get(k) is not None)
        bare = per_clip.count(0)
        rows.append(["labels per clip", f"mean {np.mean(per_clip):.2f}"])
        rows.append(["clips that kept no label", f"{bare} of {len(per_clip)}"
                     + (f" (no label passed {selection})" if bare and selection else "")])
    if timings is not None and timings["wall_seconds"] is not None:
        rows.append(["wall time", f"{timings['wall_seconds']:.1f} s (from {timings['file']})"])
        rates = run_rates(timings, manifest, clips)
        if rates:
            rows.append(["throughput", "; ".join(rates)])
    return rows


def _options_rows(manifest: dict) -> list[list]:
    """The run's inputs, model and options, as its manifest records them (credentials never are)."""
    rows = []
    for uri in manifest.get("inputs") or []:
        rows.append(["--input", uri])
    for uri in manifest.get("input_manifests") or []:
        rows.append(["--input_manifest", uri])
    model = manifest.get("model") or {}
    if model:
        hub = model.get("hub")
        rows.append(["--model", (f"{hub['repo_id']} (revision {hub['revision']}, commit {hub['commit']})" if hub
                                 else model.get("uri", ""))])
        rows.append(["model weights", f"{model.get('model_id', '')}: sha256 {model.get('weights_sha256', '')}, "
                                      f"{model.get('num_labels', '?')} labels"])
        for key in ("backend", "device", "precision"):
            if key in model:
                rows.append([f"--{key}", model[key]])
    for key, value in sorted((manifest.get("settings") or {}).items()):
        if value is not None and value is not False:
            rows.append([f"--{key}", value])
    if manifest.get("storage_options"):
        rows.append(["--storage_options", json.dumps(manifest["storage_options"], sort_keys=True)])
    if manifest.get("labelling_fingerprint"):
        rows.append(["labelling fingerprint", manifest["labelling_fingerprint"]])
    return rows


def render_html(run: str, charts: list[Chart], clips: pa.Table, errors: pa.Table, timings: dict | None,
                finished: bool = True, heading: str | None = None, source: list[list] | None = None,
                notes: list[str] = (), manifest: dict | None = None) -> str:
    """``heading``/``source``: the title and first summary rows when the report is not of a run
    directory (the Iceberg tables); ``notes``: said under the summary; ``manifest``: the run's
    (its counts, options and inputs)."""
    heading = heading or f"Labelling run {os.path.basename(run.rstrip('/'))}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(heading)}</h1>",
             f"<p class='note'>Generated {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} "
             "by pipeline.report. Charts are embedded; the same PNG files sit beside this page.</p>",
             "<h2>Summary</h2>", _table(None, _summary_rows(run, clips, errors, timings, source, manifest)),
             *(f"<p class='note'>{html.escape(n)}</p>" for n in notes)]
    if not finished:
        parts.insert(3, f"<p class='warning'><b>Warning:</b> this run directory has no {MANIFEST_FILE}: the run may "
                        "not have finished (or was written before runs ended with a manifest), so its tables may be "
                        "incomplete.</p>")
    for chart in charts:
        parts.append(f"<h2 id='{chart.name}'>{html.escape(chart.title)}</h2>")
        if chart.png is None:
            parts.append(f"<p class='note'>{html.escape(chart.note)}</p>")
            continue
        data = base64.b64encode(chart.png).decode("ascii")
        parts.append(f"<p><img alt='{html.escape(chart.title)}' src='data:image/png;base64,{data}'></p>"
                     f"<p class='note'>{html.escape(chart.note)} File: <a href='{chart.name}.png'>{chart.name}.png</a></p>")
        if chart.name == "label_frequency":
            names, _ = top1(clips)
            counts = collections.Counter(names).most_common(TOP_LABELS)
            parts.append(_table(["top-1 label", "clips", "share"],
                                [[n, c, f"{100 * c / len(names):.1f}%"] for n, c in counts]))
        if chart.name == "errors":
            examples: dict = {}
            counter: collections.Counter = collections.Counter()
            for row in errors.select(["stage", "error_type", "source_uri", "message"]).to_pylist():
                key = (row["stage"], row["error_type"])
                counter[key] += 1
                examples.setdefault(key, (row["source_uri"], (row["message"] or "")[:300]))
            parts.append(_table(["stage", "error type", "inputs", "example input", "example message"],
                                [[s, t, n, *examples[(s, t)]] for (s, t), n in counter.most_common()]))
    options = _options_rows(manifest) if manifest else []
    if options:
        parts += ["<h2 id='options'>Options and inputs</h2>", _table(None, options)]
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(run: str, out: str) -> str:
    """Renders the report of the run directory ``run`` into the local directory ``out``; returns index.html's path."""
    fs, root = fsspec.core.url_to_fs(run)
    if not fs.isdir(root):
        raise FileNotFoundError(f"run directory not found: {run}")
    found = {name: read_optional_table(run, name, REPORT_COLUMNS[name]) for name in ("clips", "errors")}
    if all(t is None for t in found.values()):
        raise FileNotFoundError(f"{run} names neither clips nor errors Parquet files: is it <output>/_runs/<run_id>?")
    clips, errors = (found[n] if found[n] is not None else TABLES[n].empty_table() for n in ("clips", "errors"))
    if fs.isdir(f"{root.rstrip('/')}/_runs"):
        # An output root: its current labels, read through the runs' manifests.
        heading = f"Current labels of {run}"
        charts = [label_frequency_chart(clips), score_histogram_chart(clips), errors_chart(errors),
                  windows_chart(None, clips),
                  Chart("throughput", "Throughput", None, "skipped: the current labels span runs; report a run "
                        "folder (<output>/_runs/<run_id>) for its throughput")]
        notes = ["Current labels: one row per clip from the latest published run that labelled it (by "
                 "labelled_at, ties by run_id), read from the files the runs' manifests name. Errors: the "
                 "latest error of each input that no later run labelled."]
        return _write_report(out, charts, render_html(run, charts, clips, errors, None, heading=heading,
                                                      notes=notes))
    timings = read_run_timings(run)
    manifest = read_manifest_file(fs, f"{root.rstrip('/')}/{MANIFEST_FILE}")
    charts = [label_frequency_chart(clips), score_histogram_chart(clips), errors_chart(errors),
              windows_chart(run, clips), throughput_chart(clips, timings, manifest)]
    return _write_report(out, charts, render_html(run, charts, clips, errors, timings,
                                                  finished=fs.isfile(f"{root.rstrip('/')}/{MANIFEST_FILE}"),
                                                  manifest=manifest))


def read_manifest_file(fs, path: str) -> dict | None:
    """The run's manifest, or None when it has none (or it is not a JSON object)."""
    try:
        data = json.loads(fs.cat(path))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_report(out: str, charts: list[Chart], page: str) -> str:
    """``out``/index.html holding ``page``, and each drawn chart beside it as a PNG file."""
    os.makedirs(out, exist_ok=True)
    for chart in charts:
        if chart.png is not None:
            with open(os.path.join(out, f"{chart.name}.png"), "wb") as f:
                f.write(chart.png)
    path = os.path.join(out, "index.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def build_iceberg_report(catalog, namespace: str, run_id: str | None, out: str) -> str:
    """The report of run ``run_id`` as committed to the Iceberg tables ``<namespace>.*`` of
    ``catalog``, or without a run id of the archive's current labels (the latest row per clip
    over all runs, and the errors of inputs still not labelled; pipeline/lakehouse/iceberg_read.py).
    Throughput is left out: a snapshot records counts, not timings. Returns index.html's path."""
    from pipeline.lakehouse.iceberg_commit import COUNT_PROPERTY_PREFIX, RUN_ID_PROPERTY
    from pipeline.lakehouse.iceberg_read import (committed_runs, current_errors, load_label_table, read_iceberg_table,
                                       run_snapshot)

    clips = read_iceberg_table(catalog, namespace, "clips", run_id,
                               REPORT_COLUMNS["clips"] + ["clip_id", "source_uri"])
    errors = read_iceberg_table(catalog, namespace, "errors", run_id,
                                REPORT_COLUMNS["errors"] + ["clip_id", "run_id", "recorded_at"])
    clips_table = load_label_table(catalog, namespace, "clips")
    source = [["Iceberg catalog", catalog.name], ["tables", f"{namespace}.clips, {namespace}.errors"]]
    notes = []
    if run_id is not None:
        heading = f"Labelling run {run_id}"
        snapshot = run_snapshot(clips_table, run_id)
        committed = datetime.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, datetime.timezone.utc)
        source.append(["committed", f"{committed.isoformat(timespec='seconds')} (snapshot {snapshot.snapshot_id})"])
        counts = {k.removeprefix(COUNT_PROPERTY_PREFIX): v for k, v in snapshot.summary.additional_properties.items()
                  if k.startswith(COUNT_PROPERTY_PREFIX) and k != RUN_ID_PROPERTY}
        if counts:
            source.append(["run counts (snapshot summary)", ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))])
    else:
        heading = f"Current labels of {namespace} (catalog {catalog.name})"
        runs = committed_runs(clips_table)
        source.append(["runs committed", f"{len(runs)}: {', '.join(runs[-10:])}" + (" ..." if len(runs) > 10 else "")])
        notes.append("Current labels: one row per clip, from the latest run that labelled it (by labelled_at, "
                     "ties by run_id). Errors: the latest error of each input that no later run labelled.")
        errors = current_errors(errors, clips)
    throughput = Chart("throughput", "Throughput", None,
                       "skipped: the Iceberg tables record each run's counts, not its timings; report the run "
                       "folder (--run) for throughput")
    charts = [label_frequency_chart(clips), score_histogram_chart(clips), errors_chart(errors),
              windows_chart(None, clips), throughput]
    return _write_report(out, charts, render_html(heading, charts, clips, errors, None, heading=heading,
                                                  source=source, notes=notes))


def default_out(run: str) -> str:
    fs, root = fsspec.core.url_to_fs(run)
    if fs.isdir(f"{root.rstrip('/')}/_runs"):
        return "report_current"   # an output root: never write into it
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return os.path.join(root, "report")
    return f"report_{os.path.basename(root.rstrip('/'))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run folder: <output>/_runs/<run_id>, or an output root for its current "
                                      "labels (path or fsspec URL)")
    add_iceberg_source_arguments(parser, source, "report this run's rows; without it, the archive's current "
                                                 "labels and the errors of inputs still not labelled",
                                 output_flags=("--output", "--iceberg_output"))
    parser.add_argument("--out", default=None, help="local directory for index.html and the PNGs "
                        "(default: <run>/report, or ./report_<run_id> / ./report_current from Iceberg)")
    args = parser.parse_args(argv)
    check_iceberg_source_arguments(parser, args)
    try:
        if args.iceberg_catalog:
            catalog = open_source_catalog(args)
            path = build_iceberg_report(catalog, args.iceberg_namespace, args.run_id,
                                        args.out or f"report_{args.run_id or 'current'}")
        else:
            path = build_report(args.run, args.out or default_out(args.run))
    except (FileNotFoundError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
