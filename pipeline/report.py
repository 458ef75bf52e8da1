"""One self-contained HTML report of a finished run, with its charts beside it as PNG files. Beam-free.

    python -m pipeline.report --run <output>/_runs/<run_id> [--out report_dir]
    python -m pipeline.report --iceberg_catalog NAME [--iceberg_namespace NS] [--run_id ID]
        [--output ROOT] [--out report_dir]

Writes ``<out>/index.html`` (every chart embedded as a base64 PNG data URI, so the file can be
mailed or attached on its own) and the same charts as ``<out>/*.png``. ``--out`` defaults to
``<run>/report`` for a local run folder and to ``./report_<run_id>`` for a remote one.

Charts: top-1 label frequency, top-1 score histogram, errors by stage and type, windows per clip
(from a ``num_windows`` clips column, else from a ``windows`` or ``segments`` table with a
``clip_id`` column; skipped with a note when neither exists) and throughput (needs a timing file in
the run directory, normally the ``_MANIFEST.json`` a finished run ends with; see
pipeline/runs/timings.py; skipped with a note otherwise). A run directory without ``_MANIFEST.json``
is reported all the same, with a warning that the run may not have finished.

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
    ax.hist(values, bins=np.arange(0.5, top + 1.5, max(1, (top + 39) // 40)), color="#9467bd", edgecolor="white")
    ax.set_xlabel("windows")
    ax.set_ylabel("clips")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{title} (mean {values.mean():.2f}, max {top})")
    return Chart("windows_per_clip", title, _png(fig), f"Counted from {source}.")


def throughput_chart(clips: pa.Table, timings: dict | None) -> Chart:
    title = "Throughput"
    if timings is None:
        return Chart("throughput", title, None,
                     f"skipped: no timing file ({', '.join(TIMING_FILES)}) with a wall time or stage times in the "
                     "run directory")
    audio = None
    if clips.num_rows:
        audio = float(np.nansum(np.asarray(clips.column("duration_seconds").to_pylist(), dtype=np.float64)))
    n_clips = timings["clips"] if timings["clips"] is not None else clips.num_rows
    stamps = [t for t in clips.column("labelled_at").to_pylist() if t is not None] if clips.num_rows else []
    stages = timings["stages"]
    panels = 1 + bool(stages)
    fig = _figure(9.0 if panels == 1 else 12.0, 5.0)
    ax = fig.add_subplot(1, panels, 1)
    start = timings["started_at"] or (min(stamps) if stamps else None)
    if stamps and start is not None:
        rel = np.sort([(t - start).total_seconds() for t in stamps])
        ax.step(np.concatenate([[0.0], rel]), np.arange(rel.size + 1), where="post", color="#d62728")
        if timings["wall_seconds"]:
            ax.axvline(timings["wall_seconds"], color="gray", linestyle=":", label="run finished")
            ax.legend(loc="upper left")
        ax.set_xlabel(f"seconds since {'the run started' if timings['started_at'] else 'the first labelled clip'}")
        ax.set_ylabel("clips labelled (cumulative, by labelled_at)")
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, "no labelled_at timestamps", ha="center", va="center", transform=ax.transAxes)
    wall = timings["wall_seconds"]
    headline = []
    if wall:
        headline.append(f"{n_clips / wall:.2f} clips/s over {wall:.1f} s")
        if audio:
            headline.append(f"{audio / wall:.1f} s of audio per second")
    ax.set_title(f"{title}: " + ("; ".join(headline) if headline else "no wall time recorded"))
    if stages:
        bx = fig.add_subplot(1, panels, 2)
        names = list(stages)
        _hbar(bx, names, [round(stages[n], 1) for n in names], "#ff7f0e", integer=False)
        bx.set_xlabel("seconds")
        bx.set_title(f"Stage times ({timings['file']})")
    note = (("; ".join(headline) + f" (from {timings['file']}).") if headline else
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
.note{color:#666;font-style:italic}.warning{background:#fff3cd;padding:.5em;border:1px solid #e0c36a}code{background:#f4f4f4;padding:0 .2em}
"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary_rows(run: str, clips: pa.Table, errors: pa.Table, timings: dict | None,
                  source: list[list] | None = None) -> list[list]:
    rows = [*(source or [["run directory", run]]), ["clips labelled", clips.num_rows],
            ["inputs not labelled (errors)", errors.num_rows]]
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
        rows.append(["labels per clip", f"mean {np.mean(per_clip):.2f}; clips with no label: {per_clip.count(0)}"])
        stamps = [t for t in clips.column("labelled_at").to_pylist() if t is not None]
        if stamps:
            rows.append(["labelled_at span", f"{min(stamps).isoformat()} to {max(stamps).isoformat()} "
                                             f"({(max(stamps) - min(stamps)).total_seconds():.1f} s)"])
    if timings is not None and timings["wall_seconds"] is not None:
        rows.append(["wall time", f"{timings['wall_seconds']:.1f} s (from {timings['file']})"])
    return rows


def render_html(run: str, charts: list[Chart], clips: pa.Table, errors: pa.Table, timings: dict | None,
                finished: bool = True, heading: str | None = None, source: list[list] | None = None,
                notes: list[str] = ()) -> str:
    """``heading``/``source``: the title and first summary rows when the report is not of a run
    directory (the Iceberg tables); ``notes``: said under the summary."""
    heading = heading or f"Labelling run {os.path.basename(run.rstrip('/'))}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(heading)}</h1>",
             f"<p class='note'>Generated {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} "
             "by pipeline.report. Charts are embedded; the same PNG files sit beside this page.</p>",
             "<h2>Summary</h2>", _table(["", ""], _summary_rows(run, clips, errors, timings, source)),
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
    charts = [label_frequency_chart(clips), score_histogram_chart(clips), errors_chart(errors),
              windows_chart(run, clips), throughput_chart(clips, timings)]
    return _write_report(out, charts, render_html(run, charts, clips, errors, timings,
                                                  finished=fs.isfile(f"{root.rstrip('/')}/{MANIFEST_FILE}")))


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
