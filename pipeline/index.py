"""Build the vector index of an output root's published runs (python -m pipeline.index build).

    python -m pipeline.index build --output ROOT [--level clips] [--runs R1,R2] [--storage_options JSON]

One partition per published run, beside the tables under ``<output>/_index/<level>/``
(pipeline/vectors/layout.py), each published all-or-nothing; up-to-date partitions are left
alone, a rerun's stale partition is replaced, runs of another embedding fingerprint are refused.
"""
from __future__ import annotations

import argparse
import logging
import sys

from pipeline.vectors.build import BuildReport, IndexBuildError, build_index
from pipeline.vectors.layout import LEVELS
from pipeline.vectors.partition import DEFAULT_EXACT_MAX
from pipeline.vectors.runs import run_id_list
from transforms.io.storage import StorageOptionsError, parse_storage_options

__all__ = ["build", "main"]


def build(output: str, level: str = "segments", runs: list[str] | None = None,
          storage_options: dict | None = None, exact_max: int = DEFAULT_EXACT_MAX,
          threads: int | None = None) -> BuildReport:
    """Python entry point: index the published runs under ``output`` (see the module docstring)."""
    return build_index(output, level, storage_options, runs, exact_max, threads)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.index",
                                description="Index the embeddings of an output root's published runs.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="index every published run not indexed yet (or indexed from an earlier attempt)")
    b.add_argument("--output", required=True, help="output root of the runs (path or URL)")
    b.add_argument("--level", choices=LEVELS, default="segments",
                   help="segments: one vector per window (default); clips: one per clip")
    b.add_argument("--runs", type=run_id_list, help="comma-separated run ids to index (default: every published run)")
    b.add_argument("--exact_max", type=int, default=DEFAULT_EXACT_MAX,
                   help=f"partitions up to this many vectors are searched exactly; larger ones get an "
                        f"IVF-SQ8 index with exact rerank (default {DEFAULT_EXACT_MAX})")
    b.add_argument("--threads", type=int, help="FAISS threads while building (default: all cores)")
    b.add_argument("--storage_options", help="fsspec options as JSON (endpoint, credentials)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        storage_options = parse_storage_options(args.storage_options)
        report = build(args.output, args.level, args.runs or None, storage_options, args.exact_max,
                       args.threads)
    except (IndexBuildError, StorageOptionsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
