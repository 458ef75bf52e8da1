"""One partition of the index (one run's embeddings): built into a local folder, then searched
memory-mapped. Beam-free.

Search is exact (a dot product over the normalised vectors, read block by block from the
memory-mapped ``vectors.npy``) up to ``exact_max`` vectors; above it the partition gets a FAISS
IVF-SQ8 index (``ann.faiss``: coarse k-means cells, 8-bit scalar-quantised residuals, inner
product), whose candidates are re-ranked exactly with the float32 vectors, so the similarities
reported are always exact. Filters are applied before the search (FAISS's ID selector inside the
probed cells), and a filter that leaves few rows is searched exactly over just those rows, so a
search returns ``k`` hits whenever ``k`` rows match.

Why FAISS IVF-SQ8 (benchmarks/bench_search.py on the 2-core dev VM, 768-d vectors drawn from a
random AST's embedding distribution; the README's Performance table): on 20 000 vectors, one
thread each, IVF-SQ8 built at 30 700 vectors/s, FAISS HNSW32 at 1 900, USearch HNSW (int8) at
1 600 and IVF-PQ96 at 43 (its training); a million-vector partition built in 61 s (16 300/s, 2
threads), where a graph would take 10 minutes or more. With 1/8 of the cells probed and the
exact rerank, recall@10 against exact search was 0.988 and the query p50 38-48 ms. IVF keeps its
cells in one file that FAISS memory-maps (IO_FLAG_MMAP), and its ID selector filters inside the
search.
"""
from __future__ import annotations

import math
import mmap
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from pipeline.vectors.layout import ANN_FILE, CLIPS_FILE, ROWS_FILE, VECTORS_FILE

# Up to this many vectors a partition is searched exactly (a full scan of 50k x 768 float32,
# 150 MB from the page cache, takes tens of ms on 2 cores).
DEFAULT_EXACT_MAX = 50_000
TRAIN_POINTS_PER_CELL = 40        # FAISS's k-means wants >= 39 training points per centroid
ADD_CHUNK = 65_536                # vectors added to the IVF index at a time
EXACT_BLOCK = 65_536              # vectors scored at a time by the exact search


def ivf_cells(n: int) -> int:
    """Coarse cells for n vectors: about sqrt(n) (1024 for a million), at least 8."""
    return int(min(16_384, max(8, 2 ** round(math.log2(max(1.0, math.sqrt(n)))))))


def default_nprobe(nlist: int) -> int:
    """Cells probed per query: 1/8 of them (128 of 1024), at least 8, at most all. Measured on a
    million vectors sampled from real embeddings' distribution (benchmarks/bench_search.py):
    recall@10 after the exact rerank 0.935 at 64 cells, 0.988 at 128."""
    return int(min(nlist, max(8, nlist // 8)))


def _faiss():
    import faiss

    return faiss


def _chunks(vectors: np.ndarray, size: int = ADD_CHUNK):
    """(start, float32 rows) of ``vectors`` a chunk at a time. A memory-mapped .npy is read with
    plain file reads, so the build holds one chunk, not the mapped file's pages."""
    n, d = vectors.shape
    path = getattr(vectors, "filename", None)
    if not path or not os.path.exists(path):
        for start in range(0, n, size):
            yield start, np.ascontiguousarray(vectors[start:start + size], dtype=np.float32)
        return
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        np.lib.format._check_version(version)   # noqa: SLF001 - numpy's own header reader
        _, fortran, dtype = np.lib.format._read_array_header(f, version)   # noqa: SLF001
        if fortran or dtype != np.float32:
            raise ValueError(f"{path}: expected C-ordered float32 vectors")
        offset = f.tell()
        for start in range(0, n, size):
            m = min(size, n - start)
            f.seek(offset + start * d * 4)
            yield start, np.fromfile(f, dtype=np.float32, count=m * d).reshape(m, d)


def build_ann(vectors: np.ndarray, nlist: int, seed: int = 0, threads: int | None = None):
    """An IVF-SQ8 inner-product index over ``vectors`` (a memory-mapped .npy is read in chunks),
    trained on an evenly spread sample. Memory: the index (n x (d + 8) bytes), the training
    sample (nlist x 40 vectors) and one chunk."""
    faiss = _faiss()
    if threads:
        faiss.omp_set_num_threads(threads)
    n, d = vectors.shape
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    sample = min(n, nlist * TRAIN_POINTS_PER_CELL)
    picks = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    training = []
    for start, chunk in _chunks(vectors):
        chosen = picks[(picks >= start) & (picks < start + len(chunk))] - start
        training.append(chunk[chosen])
    index.train(np.ascontiguousarray(np.concatenate(training)))
    del training
    for _, chunk in _chunks(vectors):
        index.add(chunk)
    return index


class PartitionWriter:
    """Fills a partition's local build folder one batch at a time: the vectors go straight into a
    memory-mapped .npy of the size the Parquet footers announced, the rows into an Arrow IPC file.
    Nothing of the run is held in memory but the batch in hand."""

    def __init__(self, folder: str, num_rows: int, rows_schema: pa.Schema):
        self.folder = folder
        self.num_rows = num_rows
        self.filled = 0
        self.vectors = None
        os.makedirs(folder, exist_ok=True)
        self._rows_sink = pa.OSFile(os.path.join(folder, ROWS_FILE), "wb")
        self._rows = ipc.new_file(self._rows_sink, rows_schema)

    def add(self, rows: pa.RecordBatch, vectors: np.ndarray) -> None:
        if len(rows) != len(vectors):
            raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
        if not len(rows):
            return
        if self.vectors is None:
            self.vectors = np.lib.format.open_memmap(os.path.join(self.folder, VECTORS_FILE), mode="w+",
                                                     dtype=np.float32, shape=(self.num_rows, vectors.shape[1]))
        if vectors.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"embeddings of {vectors.shape[1]} and {self.vectors.shape[1]} dimensions in one run")
        if self.filled + len(rows) > self.num_rows:
            raise ValueError(f"more rows than the files' footers count ({self.num_rows})")
        self.vectors[self.filled:self.filled + len(rows)] = vectors
        self.filled += len(rows)
        self._rows.write_batch(rows)

    def finish(self) -> np.ndarray:
        self._rows.close()
        self._rows_sink.close()
        if self.filled != self.num_rows:
            raise ValueError(f"the files' footers count {self.num_rows} rows but {self.filled} were read")
        if self.vectors is None:   # an empty run: an empty (0, 0) file
            np.save(os.path.join(self.folder, VECTORS_FILE), np.zeros((0, 0), np.float32))
        else:
            self.vectors.flush()
        return np.load(os.path.join(self.folder, VECTORS_FILE), mmap_mode="r")


def write_ipc(path: str, table: pa.Table) -> None:
    with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_ipc(path: str) -> pa.Table:
    """An Arrow IPC file memory-mapped: its columns are read from disk as they are touched."""
    return ipc.open_file(pa.memory_map(path, "r")).read_all()


class Partition:
    """One published partition, opened from a local folder (memory-mapped throughout)."""

    def __init__(self, folder: str, manifest: dict):
        self.folder = folder
        self.manifest = manifest
        self.run_id = manifest["run_id"]
        self.vectors = np.load(os.path.join(folder, VECTORS_FILE), mmap_mode="r")
        self.rows = read_ipc(os.path.join(folder, ROWS_FILE))
        self.clips = read_ipc(os.path.join(folder, CLIPS_FILE))
        self.ann = None
        self.nprobe = int(manifest.get("nprobe") or 0)
        self.exact_max = int(DEFAULT_EXACT_MAX if manifest.get("exact_max") is None else manifest["exact_max"])
        ann_path = os.path.join(folder, ANN_FILE)
        if os.path.exists(ann_path):
            faiss = _faiss()
            self.ann = faiss.read_index(ann_path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
            # The rerank reads a few scattered rows: no read-ahead around them.
            raw = getattr(self.vectors, "_mmap", None)
            if raw is not None and hasattr(mmap, "MADV_RANDOM"):
                raw.madvise(mmap.MADV_RANDOM)
        # Rows hidden because a later run relabelled their clip (set by the archive).
        self.current: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, row positions) of the best ``k`` rows among ``allowed`` (a boolean mask;
        None: every row), best first; fewer only when fewer rows are allowed."""
        query = np.asarray(query, np.float32).reshape(-1)
        n = len(self)
        if n == 0 or k < 1:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        count = n if allowed is None else int(allowed.sum())
        if count == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if self.ann is None or count <= self.exact_max:
            return self.exact(query, k, None if allowed is None or count == n else np.flatnonzero(allowed))
        # _approximate widens its probe until it has min(k, count) candidates, which it has at the
        # latest with every cell probed (then min(candidates, count) of the allowed rows).
        found = self._approximate(query, max(8 * k, 64), allowed if count < n else None,
                                  nprobe or self.nprobe or default_nprobe(self.ann.nlist), min(k, count))
        return self._rerank(query, found, k)

    def _approximate(self, query: np.ndarray, candidates: int, allowed: np.ndarray | None,
                     nprobe: int, wanted: int) -> np.ndarray:
        faiss = _faiss()
        # One query scans its cells on one thread; OpenMP workers would only spin (and, on a
        # busy machine, wait for cores other processes hold).
        faiss.omp_set_num_threads(1)
        selector = None
        if allowed is not None:
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
        nlist = self.ann.nlist
        while True:
            params = faiss.SearchParametersIVF(nprobe=min(nprobe, nlist), sel=selector)
            _, ids = self.ann.search(query[None, :], candidates, params=params)
            found = ids[0][ids[0] >= 0]
            if len(found) >= wanted or nprobe >= nlist:
                return found
            nprobe *= 4   # a filter left too few rows in these cells: look in more of them

    def _rerank(self, query: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.unique(ids)
        scores = np.asarray(self.vectors[ids], np.float32) @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return scores[order], ids[order]

    def exact(self, query: np.ndarray, k: int, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over every row, or over the rows ``ids`` (sorted positions)."""
        total = len(self) if ids is None else len(ids)
        best_scores, best_ids = np.zeros(0, np.float32), np.zeros(0, np.int64)
        for start in range(0, total, EXACT_BLOCK):
            if ids is None:
                block_ids = np.arange(start, min(total, start + EXACT_BLOCK))
                block = self.vectors[start:start + EXACT_BLOCK]
            else:
                block_ids = ids[start:start + EXACT_BLOCK]
                block = self.vectors[block_ids]
            scores = np.asarray(block, np.float32) @ query
            if len(scores) > k:
                keep = np.argpartition(-scores, k - 1)[:k]
                scores, block_ids = scores[keep], block_ids[keep]
            best_scores = np.concatenate([best_scores, scores])
            best_ids = np.concatenate([best_ids, block_ids])
        order = np.lexsort((best_ids, -best_scores))[:k]
        return best_scores[order], best_ids[order]

    def row_positions_of(self, clip_id: str) -> np.ndarray:
        return np.flatnonzero(pc.equal(self.rows["clip_id"], clip_id).to_numpy(zero_copy_only=False))
