"""Archive search at scale: recall@10 of the approximate index against exact search, build speed,
index bytes per vector, peak memory, and query latency including index load, on 1 million 768-d
vectors drawn from the distribution of real embeddings.

    python benchmarks/bench_search.py [--vectors 1000000] [--windows 256] [--compare 20000] [--workdir DIR]

Where the vectors come from: a random-weight AST of full width (hidden 768, 12 heads, FFN 3072,
1024 frames x 128 mel bins, 527 labels; 2 layers by default, --layers) embeds --windows
generated 10.24 s recordings (tones, chirps, noise, clicks, mixtures of them, random
parameters) with the pipeline's own fbank and model code. A Gaussian is fitted to those
embeddings (their mean, their top principal components with their variances, and an isotropic
rest carrying the remaining variance) and the archive's vectors are sampled from it, then
L2-normalised as the index stores them. The queries are 200 further samples of the same
Gaussian (not in the index).

Phases run in child processes (peak RSS of each is its own ru_maxrss):
  embed      checkpoint + recordings -> embeddings (the model's pooled outputs)
  generate   fit + sample into a partition folder (vectors.npy, rows.arrow, clips.arrow), exact top-10 truth
  build      FAISS IVF-SQ8 over the memory-mapped vectors (pipeline/vectors/partition.py build_ann)
  query      a fresh process opens the partition (memory-mapped) and runs the queries through
             Partition.search (IVF-SQ8 candidates, exact rerank), several nprobe values
  compare    (--compare N) FAISS IVF-SQ8, IVF-PQ96, HNSW32 and USearch HNSW (int8) on N vectors:
             build vectors/s, recall@10, p50 query: why IVF-SQ8

Prints one JSON object with the machine record (benchmarks/machine_info.py: lscpu flags).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
K = 10
QUERIES = 200
RANK = 64
SEED = 0


def peak_rss_mb() -> float:
    """Peak resident set (ru_maxrss): memory-mapped file pages the process touched count too."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_now() -> dict:
    """Resident memory now, split: RssAnon (the process's own) and RssFile (mapped file pages,
    i.e. the page cache of the memory-mapped index: shared, and reclaimed under pressure)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[f"{key}_mb"] = round(int(value.split()[0]) / 1024, 1)
    return out


# ---------------------------------------------------------------------------------------- phases

def phase_embed(args) -> dict:
    from transforms.model.runtime_env import ensure_protobuf_python_backend

    ensure_protobuf_python_backend()
    import numpy as np

    from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint
    from transforms.audio.fbank import FeatureConfig, ast_input_features
    from transforms.mindspore_inference import load_runner

    spec = TinyASTSpec(hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12,
                       intermediate_size=3072, num_labels=527)
    folder = write_checkpoint(os.path.join(args.workdir, "model"), spec, seed=SEED)
    runner = load_runner(folder, "native", batch_size=8, device="cpu")
    features = FeatureConfig()
    rng = np.random.default_rng(SEED)
    rate, n = 16000, 163840
    t = np.arange(n) / rate

    def recording(i: int) -> np.ndarray:
        parts = []
        for _ in range(rng.integers(1, 4)):
            kind = rng.integers(0, 5)
            if kind == 0:
                x = np.sin(2 * np.pi * rng.uniform(80, 4000) * t)
            elif kind == 1:
                f0, f1 = rng.uniform(80, 7000, 2)
                x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1])))
            elif kind == 2:
                x = rng.standard_normal(n) * rng.uniform(0.05, 0.5)
            elif kind == 3:
                x = np.zeros(n)
                x[rng.integers(0, n, rng.integers(5, 200))] = 1.0
            else:
                x = np.sin(2 * np.pi * rng.uniform(100, 1000) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 8) * t))
            parts.append(x * rng.uniform(0.1, 0.9))
        return np.clip(np.sum(parts, axis=0), -1, 1).astype(np.float32)

    started = time.perf_counter()
    pooled = []
    for start in range(0, args.windows, 8):
        batch = np.stack([ast_input_features(recording(i), features) for i in range(start, min(args.windows, start + 8))])
        pooled.append(runner.predict(batch)[1])
    embeddings = np.concatenate(pooled)
    np.save(os.path.join(args.workdir, "embeddings.npy"), embeddings)
    return {"windows": len(embeddings), "dim": int(embeddings.shape[1]), "layers": args.layers,
            "seconds": round(time.perf_counter() - started, 1),
            "mean_pairwise_cosine": _mean_cosine(embeddings)}


def _mean_cosine(x) -> float:
    import numpy as np

    y = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = y @ y.T
    return round(float((c.sum() - len(y)) / (len(y) * (len(y) - 1))), 6)


def fitted_gaussian(embeddings):
    """(mean, components (r, d) scaled by their standard deviations, isotropic rest std)."""
    import numpy as np

    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    variances = s ** 2 / (len(embeddings) - 1)
    r = min(RANK, len(variances) - 1)
    rest = float(variances[r:].sum() / (embeddings.shape[1] - r))
    return mean, vt[:r] * np.sqrt(variances[:r])[:, None], np.sqrt(rest), float(variances[:r].sum() / variances.sum())


def sample(gaussian, n: int, rng):
    import numpy as np

    mean, components, rest, _ = gaussian
    z = rng.standard_normal((n, components.shape[0])).astype(np.float32)
    x = mean + z @ components + rng.standard_normal((n, len(mean))).astype(np.float32) * rest
    return x.astype(np.float32)


def phase_generate(args) -> dict:
    import numpy as np
    import pyarrow as pa

    from pipeline.vectors.build import CLIPS_SCHEMA, ROWS_SCHEMA
    from pipeline.vectors.partition import PartitionWriter, write_ipc
    from pipeline.vectors.runs import normalised

    embeddings = np.load(os.path.join(args.workdir, "embeddings.npy"))
    gaussian = fitted_gaussian(embeddings)
    rng = np.random.default_rng(SEED + 1)
    folder = os.path.join(args.workdir, "partition")
    writer = PartitionWriter(folder, args.vectors, ROWS_SCHEMA)
    started = time.perf_counter()
    chunk = 65536
    for first in range(0, args.vectors, chunk):
        m = min(chunk, args.vectors - first)
        ids = np.arange(first, first + m)
        writer.add(synthetic_rows(ids), normalised(sample(gaussian, m, rng)))
    vectors = writer.finish()
    clips = np.arange((args.vectors + 9) // 10)
    write_ipc(os.path.join(folder, "clips.arrow"), pa.table({
        "clip_id": [f"s3://archive/clip-{i:07d}.flac" for i in clips],
        "source_uri": [f"s3://archive/clip-{i:07d}.flac" for i in clips],
        "shard_uri": pa.nulls(len(clips), pa.string()), "member_name": pa.nulls(len(clips), pa.string()),
        "duration_seconds": [102.4] * len(clips), "labelled_at": pa.nulls(len(clips), pa.timestamp("us", tz="UTC")),
        "run_id": ["bench"] * len(clips)}, schema=CLIPS_SCHEMA))
    generated = time.perf_counter() - started
    queries = normalised(sample(gaussian, QUERIES, np.random.default_rng(SEED + 2)))
    np.save(os.path.join(args.workdir, "queries.npy"), queries)
    started = time.perf_counter()
    truth = exact_top_k(vectors, queries, K)
    np.save(os.path.join(args.workdir, "truth.npy"), truth)
    return {"vectors": args.vectors, "rank": int(gaussian[1].shape[0]),
            "variance_in_components": round(gaussian[3], 4), "generate_seconds": round(generated, 1),
            "exact_truth_seconds": round(time.perf_counter() - started, 1),
            "sampled_mean_pairwise_cosine": _mean_cosine(np.asarray(vectors[:2000]))}


def synthetic_rows(ids):
    """Rows of a partition of 10-window clips: clip ids, windows, times; no labels."""
    import pyarrow as pa

    from pipeline.vectors.build import ROWS_SCHEMA

    m = len(ids)
    return pa.RecordBatch.from_arrays([
        pa.array([f"s3://archive/clip-{i // 10:07d}.flac" for i in ids]),
        pa.array([f"s3://archive/clip-{i // 10:07d}.flac" for i in ids]),
        pa.array(ids % 10, pa.int32()), pa.array((ids % 10) * 10.24), pa.array((ids % 10 + 1) * 10.24),
        pa.nulls(m, ROWS_SCHEMA.field("labels").type), pa.array(["bench"] * m),
        pa.array(ids // 10, pa.int32())], schema=ROWS_SCHEMA)


def exact_top_k(vectors, queries, k: int):
    import numpy as np

    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for first in range(0, len(vectors), 65536):
        block = np.asarray(vectors[first:first + 65536], np.float32)
        s = queries @ block.T
        keep = np.argpartition(-s, k - 1, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, keep, 1)], axis=1)
        best_i = np.concatenate([best_i, keep + first], axis=1)
        order = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
    return best_i


def phase_build(args) -> dict:
    import faiss
    import numpy as np

    from pipeline.vectors.partition import build_ann, default_nprobe, ivf_cells

    folder = os.path.join(args.workdir, "partition")
    vectors = np.load(os.path.join(folder, "vectors.npy"), mmap_mode="r")
    nlist = ivf_cells(len(vectors))
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    index = build_ann(vectors, nlist)
    seconds = time.perf_counter() - started
    faiss.write_index(index, os.path.join(folder, "ann.faiss"))
    # exact_max 0: every query takes the approximate path (IVF-SQ8 candidates, exact rerank).
    manifest = {"run_id": "bench", "nlist": nlist, "nprobe": default_nprobe(nlist), "exact_max": 0,
                "kind": "ivf_sq8"}
    with open(os.path.join(args.workdir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    size = {name: os.path.getsize(os.path.join(folder, name)) for name in
            ("ann.faiss", "vectors.npy", "rows.arrow", "clips.arrow")}
    return {"nlist": nlist, "build_seconds": round(seconds, 1),
            "build_vectors_per_second": round(len(vectors) / seconds),
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_build_mb": round(rss_before, 1),
            "memory_after_build": memory_now(),
            "bytes_per_vector": {name: round(b / len(vectors), 1) for name, b in size.items()},
            "bytes": size}


def phase_query(args) -> dict:
    import numpy as np

    started = time.perf_counter()
    from pipeline.vectors.partition import Partition

    imported = time.perf_counter() - started
    with open(os.path.join(args.workdir, "manifest.json")) as f:
        manifest = json.load(f)
    queries = np.load(os.path.join(args.workdir, "queries.npy"))
    truth = np.load(os.path.join(args.workdir, "truth.npy"))
    started = time.perf_counter()
    partition = Partition(os.path.join(args.workdir, "partition"), manifest)
    load = time.perf_counter() - started
    started = time.perf_counter()
    partition.search(queries[0], K)
    first = time.perf_counter() - started
    out = {"import_seconds": round(imported, 2), "load_ms": round(load * 1000, 1),
           "first_query_ms_incl_page_faults": round(first * 1000, 1), "by_nprobe": {}}
    for nprobe in args.nprobe:
        latencies, recalls = [], []
        for q, expected in zip(queries, truth):
            t0 = time.perf_counter()
            _, ids = partition.search(q, K, nprobe=nprobe)
            latencies.append(time.perf_counter() - t0)
            recalls.append(len(set(ids.tolist()) & set(expected.tolist())) / K)
        lat = np.asarray(latencies) * 1000
        out["by_nprobe"][str(nprobe)] = {"recall_at_10": round(float(np.mean(recalls)), 4),
                                         "p50_ms": round(float(np.percentile(lat, 50)), 2),
                                         "p99_ms": round(float(np.percentile(lat, 99)), 2)}
    # A filter that keeps a tenth of the rows (filter, then search inside the probed cells).
    allowed = np.zeros(len(partition), bool)
    allowed[::10] = True
    latencies = []
    for q in queries[:50]:
        t0 = time.perf_counter()
        _, ids = partition.search(q, K, allowed)
        latencies.append(time.perf_counter() - t0)
        assert len(ids) == K and allowed[ids].all()
    out["filtered_10pct_p50_ms"] = round(float(np.percentile(np.asarray(latencies) * 1000, 50)), 2)
    # What `search` does end to end on an opened archive: filters and superseded rows (none
    # here), the search, and the hits table with their clips' details.
    from pipeline.vectors.archive import Archive

    archive = Archive(args.workdir, "segments", {"embedding_fingerprint": "bench"}, [partition], [])
    latencies = []
    for q in queries:
        t0 = time.perf_counter()
        hits = archive.search(q, K)
        latencies.append(time.perf_counter() - t0)
        assert hits.num_rows == K
    lat = np.asarray(latencies) * 1000
    out["archive_search_default_nprobe"] = {"p50_ms": round(float(np.percentile(lat, 50)), 2),
                                            "p99_ms": round(float(np.percentile(lat, 99)), 2)}
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["memory_after_queries"] = memory_now()
    return out


def phase_compare(args) -> dict:
    """The libraries side by side on --compare vectors of the same distribution."""
    import faiss
    import numpy as np

    from pipeline.vectors.runs import normalised

    # One thread for every library: builds compared on equal terms, and OpenMP workers do not
    # spin against other processes on a shared machine.
    faiss.omp_set_num_threads(1)
    gaussian = fitted_gaussian(np.load(os.path.join(args.workdir, "embeddings.npy")))
    rng = np.random.default_rng(SEED + 3)
    x = normalised(sample(gaussian, args.compare, rng))
    q = normalised(sample(gaussian, 100, rng))
    truth = exact_top_k(x, q, K)
    d, nlist = x.shape[1], max(8, int(2 ** round(np.log2(np.sqrt(args.compare)))))
    results = {}

    def measure(name, build, search):
        t0 = time.perf_counter()
        index = build()
        seconds = time.perf_counter() - t0
        lat, rec = [], []
        for qi, expected in zip(q, truth):
            t1 = time.perf_counter()
            ids = search(index, qi)
            lat.append(time.perf_counter() - t1)
            rec.append(len(set(np.asarray(ids).tolist()) & set(expected.tolist())) / K)
        results[name] = {"build_vectors_per_second": round(len(x) / seconds),
                         "recall_at_10": round(float(np.mean(rec)), 4),
                         "p50_ms": round(float(np.percentile(np.asarray(lat) * 1000, 50)), 2)}

    def rerank(ids, qi):
        ids = np.unique(ids[ids >= 0])
        return ids[np.argsort(-(x[ids] @ qi))][:K]

    def ivf(factory):
        def build():
            index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
            index.train(x[np.random.default_rng(0).choice(len(x), min(len(x), nlist * 40), replace=False)])
            index.add(x)
            index.nprobe = max(8, nlist // 8)   # as pipeline/vectors/partition.py default_nprobe
            return index
        return build

    for name, factory in (("faiss_ivf_sq8_rerank", f"IVF{nlist},SQ8"), ("faiss_ivf_pq96_rerank", f"IVF{nlist},PQ96")):
        measure(name, ivf(factory), lambda index, qi: rerank(index.search(qi[None], 80)[1][0], qi))

    def hnsw():
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64
        index.add(x)
        return index
    measure("faiss_hnsw32_flat", hnsw, lambda index, qi: index.search(qi[None], K)[1][0])
    try:
        from usearch.index import Index

        def usearch_build():
            index = Index(ndim=d, metric="cos", dtype="i8", connectivity=16)
            index.add(np.arange(len(x)), x, threads=1)
            return index
        measure("usearch_hnsw_i8_rerank", usearch_build,
                lambda index, qi: rerank(np.asarray(index.search(qi, 80).keys, np.int64), qi))
    except ImportError:
        results["usearch_hnsw_i8_rerank"] = "usearch not installed"
    return {"vectors": args.compare, "nlist": nlist, "threads": 1, "results": results}


PHASES = {"embed": phase_embed, "generate": phase_generate, "build": phase_build, "query": phase_query,
          "compare": phase_compare}


def run_phase(name: str, args) -> dict:
    argv = [sys.executable, os.path.abspath(__file__), "--phase", name, "--workdir", args.workdir,
            "--vectors", str(args.vectors), "--windows", str(args.windows), "--layers", str(args.layers),
            "--compare", str(args.compare), "--nprobe", *map(str, args.nprobe)]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    if done.returncode:
        raise RuntimeError(f"phase {name} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["phase_wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vectors", type=int, default=1_000_000)
    p.add_argument("--windows", type=int, default=256, help="real embeddings the Gaussian is fitted to")
    p.add_argument("--layers", type=int, default=2, help="layers of the full-width random AST")
    p.add_argument("--compare", type=int, default=20_000, help="vectors for the library comparison (0: skip)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--workdir", help="keep the files here (default: a temporary folder, removed)")
    p.add_argument("--phases", default="embed,generate,build,query,compare",
                   help="which phases to run (a kept --workdir holds the earlier phases' files)")
    p.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return 0
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from machine_info import machine_info

    temporary = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="bench_search-")
    os.makedirs(args.workdir, exist_ok=True)
    report = {"machine": machine_info(), "vectors": args.vectors, "k": K, "queries": QUERIES}
    try:
        phases = [p for p in args.phases.split(",") if p != "compare" or args.compare]
        for name in phases:
            if name == "embed" and os.path.exists(os.path.join(args.workdir, "embeddings.npy")):
                report[name] = "reused embeddings.npy from the work folder"
                continue
            report[name] = run_phase(name, args)
            print(f"{name}: {json.dumps(report[name])}", file=sys.stderr)
    finally:
        if temporary:
            import shutil

            shutil.rmtree(args.workdir, ignore_errors=True)
    report["machine_after"] = {"load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
