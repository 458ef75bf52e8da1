"""Search hits as the console shows them, and as Parquet, CSV or JSON files. Beam-free."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = (".parquet", ".csv", ".json")


def labels_text(labels, n: int = 3) -> str:
    return ", ".join(f"{lab['label']} {lab['score']:.2f}" for lab in (labels or [])[:n])


def render(hits: pa.Table) -> str:
    lines = [f"{'rank':>4}  {'similarity':>10}  {'start':>8}  {'end':>8}  clip / labels"]
    for hit in hits.to_pylist():
        window = "" if hit["window_index"] is None else f" [window {hit['window_index']}]"
        lines.append(f"{hit['rank']:>4}  {hit['similarity']:>10.6f}  {hit['start_seconds']:>8.2f}  "
                     f"{hit['end_seconds']:>8.2f}  {hit['clip_id']}{window}  (run {hit['run_id']})")
        lines.append(f"{'':>38}{labels_text(hit['labels'])}")
    if not hits.num_rows:
        lines.append("  (no hits)")
    return "\n".join(lines)


def flat(hits: pa.Table) -> pa.Table:
    """The hits with labels as text ("Dog 0.91, Bark 0.40") and times as ISO text: CSV has no lists."""
    texts = [labels_text(labels, n=len(labels or [])) for labels in hits["labels"].to_pylist()]
    return hits.set_column(hits.schema.get_field_index("labels"), "labels", pa.array(texts, pa.string()))


def write_results(hits: pa.Table, path: str) -> str:
    """Write the hits to ``path``; the format follows its extension (.parquet, .csv, .json)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"--results {path}: the name must end in one of {', '.join(FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if ext == ".parquet":
        pq.write_table(hits, path)
    elif ext == ".csv":
        pacsv.write_csv(flat(hits), path)
    else:
        with open(path, "w") as f:
            json.dump(hits.to_pylist(), f, indent=2, default=str)
    return path
