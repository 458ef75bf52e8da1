"""An HTML page of search hits, for people who would rather look and listen: each hit's clip,
window, similarity and labels, and an audio player for the hit's window where its source is
readable. Each window is cut from the source (a file, or a member of a tar shard streamed to it)
into a small 16-bit mono WAV beside the page (``<page>_audio/hit-NN.wav``). Beam-free."""
from __future__ import annotations

import contextlib
import html
import io
import os
import tarfile

import numpy as np
import pyarrow as pa
import soundfile

from pipeline.vectors.audio_span import read_span
from pipeline.vectors.results import labels_text
from transforms.io.storage import Storage

# Longest audio cut per hit (a clips-level hit spans its whole clip).
MAX_SECONDS = 30.0


@contextlib.contextmanager
def _open_source(storage: Storage, hit: dict):
    if hit.get("shard_uri") and hit.get("member_name"):
        with storage.open(hit["shard_uri"]) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                if member.name == hit["member_name"]:
                    yield io.BytesIO(tar.extractfile(member).read())
                    return
        raise FileNotFoundError(f"{hit['member_name']} not found in {hit['shard_uri']}")
    with storage.open(hit["source_uri"]) as f:
        yield f


def cut_window(storage: Storage, hit: dict, path: str) -> str:
    """Write the hit's window (its source's start..end seconds, mono) to ``path`` as 16-bit WAV."""
    with _open_source(storage, hit) as f:
        samples, header = read_span(f, hit["start_seconds"], min(hit["end_seconds"], hit["start_seconds"] + MAX_SECONDS),
                                    to_frame=int)
    soundfile.write(path, np.clip(samples.mean(axis=1), -1, 1), header.original_sample_rate, subtype="PCM_16")
    return path


def write_page(hits: pa.Table, page: str, title: str, storage_options: dict | None = None) -> str:
    """Write the page to ``page`` (and the audio beside it); returns its path."""
    storage = Storage(storage_options)
    folder = os.path.dirname(os.path.abspath(page))
    audio_dir_name = os.path.splitext(os.path.basename(page))[0] + "_audio"
    os.makedirs(os.path.join(folder, audio_dir_name), exist_ok=True)
    rows = []
    for hit in hits.to_pylist():
        name = f"hit-{hit['rank']:02d}.wav"
        try:
            cut_window(storage, hit, os.path.join(folder, audio_dir_name, name))
            player = f'<audio controls preload="none" src="{html.escape(audio_dir_name)}/{name}"></audio>'
        except Exception as e:   # the page still lists the hit
            player = f'<span class="unreadable">source not readable: {html.escape(type(e).__name__)}: ' \
                     f'{html.escape(str(e)[:200])}</span>'
        window = "" if hit["window_index"] is None else str(hit["window_index"])
        rows.append(
            f"<tr><td>{hit['rank']}</td><td>{hit['similarity']:.6f}</td>"
            f"<td class=clip>{html.escape(hit['clip_id'])}</td><td>{window}</td>"
            f"<td>{hit['start_seconds']:.2f}&ndash;{hit['end_seconds']:.2f} s</td>"
            f"<td>{html.escape(labels_text(hit['labels'], n=5))}</td><td>{html.escape(hit['run_id'] or '')}</td>"
            f"<td>{player}</td></tr>")
    body = "\n".join(rows) or '<tr><td colspan="8">no hits</td></tr>'
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:middle}}
td.clip{{font-family:monospace;word-break:break-all;max-width:32em}} .unreadable{{color:#a00}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table><thead><tr><th>#</th><th>similarity</th><th>clip</th><th>window</th><th>time</th><th>labels</th>
<th>run</th><th>listen</th></tr></thead>
<tbody>
{body}
</tbody></table></body></html>
"""
    with open(page, "w") as f:
        f.write(doc)
    return page
