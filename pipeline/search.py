"""Search an archive by example (python -m pipeline.search): the windows (or clips) whose
embeddings are most similar to a query recording's, or to a stored clip's.

    python -m pipeline.search --output ROOT --audio query.wav [--start S --end E] [--k 10]
    python -m pipeline.search --output ROOT --clip CLIP_ID [--window N] [--where label=Dog]
        [--results hits.parquet|.csv|.json] [--html hits.html]

Needs the index (python -m pipeline.index build). Prints the hits: rank, similarity (cosine),
window start/end, clip id, run and labels. Rows superseded by a later run never appear.
"""
from __future__ import annotations

from transforms.model.runtime_env import ensure_protobuf_python_backend

ensure_protobuf_python_backend()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from pipeline.vectors.archive import Archive, NoIndexError  # noqa: E402
from pipeline.vectors.layout import LEVELS  # noqa: E402
from pipeline.vectors.query import FingerprintMismatch, QueryEmbedder  # noqa: E402
from pipeline.vectors.results import render, write_results  # noqa: E402
from pipeline.vectors.where import KEYS, Where  # noqa: E402
from transforms.io.storage import StorageOptionsError, parse_storage_options  # noqa: E402

__all__ = ["open_archive", "search", "main"]


def open_archive(output: str, level: str = "segments", storage_options: dict | None = None) -> Archive:
    """The index of ``output`` opened once, for many searches (notebooks): pass it as ``archive``."""
    return Archive.open(output, level, storage_options)


def search(output: str | None = None, *, audio: str | None = None, start: float | None = None,
           end: float | None = None, clip: str | None = None, window: int | None = None,
           vector=None, k: int = 10, where: list[str] | None = None, level: str = "segments",
           model: str | None = None, storage_options: dict | None = None, archive: Archive | None = None,
           embedder: QueryEmbedder | None = None, results: str | None = None, html: str | None = None,
           nprobe: int | None = None, one_per_clip: bool = False, device: str = "cpu") -> pa.Table:
    """Python entry point. Exactly one query: ``audio`` (a recording, or its span ``start``..``end``
    seconds, embedded with the index's checkpoint or ``model``; its fingerprint must match),
    ``clip`` (a stored clip's embedding, or its window ``window``) or ``vector`` (an embedding).
    Returns the hits (pipeline/vectors/archive.py HIT_SCHEMA), best first; ``one_per_clip``:
    each clip's best window only (k places); ``results`` and ``html`` also write them to a file
    and a page."""
    if sum(x is not None for x in (audio, clip, vector)) != 1:
        raise ValueError("give exactly one query: audio, clip or vector")
    if (start is not None or end is not None) and audio is None:
        raise ValueError("--start/--end cut the --audio query")
    if window is not None and clip is None:
        raise ValueError("--window needs --clip")
    if k < 1:
        raise ValueError("k must be at least 1")
    archive = archive or Archive.open(output, level, storage_options)
    condition = Where.parse(where)
    if audio is not None:
        embedder = embedder or QueryEmbedder(archive.doc, model, storage_options, device=device)
        vector = embedder.embed(audio, start, end)
    elif clip is not None:
        vector = archive.vector_of(clip, window)
    hits = archive.search(np.asarray(vector, np.float32), k, condition, nprobe=nprobe, one_per_clip=one_per_clip)
    if results:
        write_results(hits, results)
    if html:
        from pipeline.vectors.hits_page import write_page

        what = audio or (f"{clip}" + (f" window {window}" if window is not None else "") if clip else "a vector")
        write_page(hits, html, f"Search: {what}", storage_options)
    return hits


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.search", description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True, help="output root holding the runs and their index")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--audio", help="query recording (path or URL)")
    query.add_argument("--clip", help="query with a stored clip's embedding (its clip id)")
    p.add_argument("--start", type=float, help="--audio: start of the query span, seconds")
    p.add_argument("--end", type=float, help="--audio: end of the query span, seconds")
    p.add_argument("--window", type=int, help="--clip: this window's embedding (default: the clip's mean)")
    p.add_argument("--k", type=int, default=10, help="hits to return (default 10)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help=f"filter, repeatable (same key: any of; different keys: all of); KEY one of {', '.join(KEYS)}")
    p.add_argument("--one_per_clip", action="store_true",
                   help="only each clip's best window: k places rather than k windows (some of one place)")
    p.add_argument("--level", choices=LEVELS, default="segments", help="which index: segments (default) or clips")
    p.add_argument("--results", help="also write the hits to this .parquet, .csv or .json file")
    p.add_argument("--html", help="also write an HTML page of the hits (audio players for readable sources)")
    p.add_argument("--model", help="checkpoint that embeds --audio (default: the index's; fingerprint must match)")
    p.add_argument("--device", default="cpu", help="MindSpore device for --audio (cpu, gpu, ascend, auto)")
    p.add_argument("--nprobe", type=int, help="IVF cells probed (default: the partition's)")
    p.add_argument("--storage_options", help="fsspec options as JSON (endpoint, credentials)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        storage_options = parse_storage_options(args.storage_options)
        archive = Archive.open(args.output, args.level, storage_options)
        for note in archive.notes:
            print(f"note: {note}", file=sys.stderr)
        hits = search(args.output, audio=args.audio, start=args.start, end=args.end, clip=args.clip,
                      window=args.window, k=args.k, where=args.where, level=args.level, model=args.model,
                      storage_options=storage_options, archive=archive, results=args.results,
                      html=args.html, nprobe=args.nprobe, one_per_clip=args.one_per_clip,
                      device=args.device)
    except (NoIndexError, FingerprintMismatch, StorageOptionsError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    print(render(hits))
    for path in (args.results, args.html):
        if path:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
