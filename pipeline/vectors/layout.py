"""Where the index of an output root lives, in one place.

    <output>/_index/<level>/_INDEX.json
        the index's embedding fingerprint and the model it stands for: every partition must
        match it (embeddings of different models are not comparable)
    <output>/_index/<level>/<run_id>/_MANIFEST.json
        the partition of one published run: which build is published, the run's attempt it was
        built from (a rerun of the run id makes it stale), counts, the kind of index; written last
    <output>/_index/<level>/<run_id>/<build_id>/
        vectors.npy  the run's embeddings, L2-normalised float32 (exact search and the exact
                     rerank read them memory-mapped)
        rows.arrow   one row per vector: clip, window, times, labels, run, its clip's row (Arrow IPC,
                     uncompressed, so it is memory-mapped, not loaded)
        clips.arrow  one row per clip of the run: clip id, labelled_at (the current-labels rule)
        ann.faiss    above the exact-search size only: FAISS IVF-SQ8 over the vectors

``<level>`` is ``segments`` (one vector per window) or ``clips`` (one per clip). The index lives
under ``_index`` (a name starting with ``_``, which table readers skip).
"""
from __future__ import annotations

INDEX_DIR = "_index"
LEVELS = ("segments", "clips")
ARCHIVE_DOC = "_INDEX.json"
PARTITION_MANIFEST = "_MANIFEST.json"
VECTORS_FILE = "vectors.npy"
ROWS_FILE = "rows.arrow"
CLIPS_FILE = "clips.arrow"
ANN_FILE = "ann.faiss"
BUILD_FILES = (VECTORS_FILE, ROWS_FILE, CLIPS_FILE)


def _root(output: str) -> str:
    return output.rstrip("/")


def level_dir(output: str, level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"unknown index level {level!r}; choose one of {LEVELS}")
    return f"{_root(output)}/{INDEX_DIR}/{level}"


def archive_doc_path(output: str, level: str) -> str:
    return f"{level_dir(output, level)}/{ARCHIVE_DOC}"


def partition_dir(output: str, level: str, run_id: str) -> str:
    return f"{level_dir(output, level)}/{run_id}"


def partition_manifest_path(output: str, level: str, run_id: str) -> str:
    return f"{partition_dir(output, level, run_id)}/{PARTITION_MANIFEST}"


def build_dir(output: str, level: str, run_id: str, build_id: str) -> str:
    return f"{partition_dir(output, level, run_id)}/{build_id}"

