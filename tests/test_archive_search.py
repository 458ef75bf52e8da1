"""Archive search (pipeline/vectors, python -m pipeline.index / pipeline.search) over the shared
labelled archive (tests/search_corpus.py, the tiny random-weight model): near-duplicates found
first, filters that still return k hits, the approximate index against exact search, superseded
rows, nightly partitions and reruns, mixed fingerprints refused, results files and the HTML page,
and an index on object storage.
"""
import json
import os
import re
import shutil
import time

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import soundfile

from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint
from pipeline.index import build, main as index_main
from pipeline.search import main as search_main, open_archive, search
from pipeline.vectors.layout import partition_manifest_path
from pipeline.vectors.query import FingerprintMismatch
from tests.search_corpus import HOP_SECONDS, SNIPPET_OFFSETS, copy_archive, label

# The shared archive takes 1-2 minutes to label on 2 cores (once per session).
pytestmark = pytest.mark.slow
TIMINGS = {}


@pytest.fixture(scope="module")
def archive(labelled_archive):
    return open_archive(labelled_archive["output"])


def _exact_truth(output: str, query: np.ndarray, k: int, keep=lambda row: True):
    """Top-k (clip_id, window_index) by cosine over the segments table read back independently."""
    rows = ds.dataset(f"{output}/segments", format="parquet", partitioning="hive").to_table().to_pylist()
    rows = [r for r in rows if keep(r)]
    x = np.asarray([r["embedding"] for r in rows], np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ (query / np.linalg.norm(query))
    order = np.argsort(-s, kind="stable")[:k]
    return [(rows[i]["clip_id"], rows[i]["window_index"]) for i in order], s[order]


def test_near_duplicates_come_first(labelled_archive, archive):
    started = time.monotonic()
    hits = search(audio=labelled_archive["snippet"], k=5, archive=archive, one_per_clip=True)
    TIMINGS["audio query incl. model load"] = time.monotonic() - started
    rows = hits.to_pylist()
    print("labelling / index seconds:", labelled_archive["seconds"])
    print("near-duplicate hits:", [(os.path.basename(r["clip_id"]), r["start_seconds"], round(r["similarity"], 6))
                                   for r in rows])
    assert sorted(r["clip_id"] for r in rows[:3]) == sorted(labelled_archive["long"])
    for r in rows[:3]:
        offset = SNIPPET_OFFSETS[labelled_archive["long"].index(r["clip_id"])]
        assert abs(r["start_seconds"] - offset) <= HOP_SECONDS, (r["clip_id"], r["start_seconds"], offset)
    assert rows[2]["similarity"] > rows[3]["similarity"]   # the copies stand apart from everything else
    # Window by window, the best windows are all windows of the three copies, around their offsets.
    windows = search(audio=labelled_archive["snippet"], k=3, archive=archive).to_pylist()
    assert all(w["clip_id"] in labelled_archive["long"] for w in windows)


def test_stored_clip_query_and_result_files(labelled_archive, archive, tmp_path):
    clip = labelled_archive["long"][1]
    hits = search(clip=clip, window=21, k=4, archive=archive, results=str(tmp_path / "hits.parquet"))
    first = hits.to_pylist()[0]
    assert (first["clip_id"], first["window_index"]) == (clip, 21) and first["similarity"] == pytest.approx(1.0, abs=1e-5)
    truth, scores = _exact_truth(labelled_archive["output"], np.asarray(archive.vector_of(clip, 21)), 4)
    assert [(h["clip_id"], h["window_index"]) for h in hits.to_pylist()] == truth
    np.testing.assert_allclose(hits["similarity"].to_numpy(), scores, atol=1e-5)
    search(clip=clip, window=21, k=4, archive=archive, results=str(tmp_path / "hits.csv"))
    search(clip=clip, window=21, k=4, archive=archive, results=str(tmp_path / "hits.json"))
    assert pq.read_table(tmp_path / "hits.parquet").equals(hits)
    csv = pd.read_csv(tmp_path / "hits.csv")
    assert csv["clip_id"].tolist() == hits["clip_id"].to_pylist() and csv["labels"].str.len().min() > 0
    assert [r["window_index"] for r in json.loads((tmp_path / "hits.json").read_text())] == hits["window_index"].to_pylist()
    # The clip as a query (the mean of its windows' normalised embeddings) points where the clips
    # table's embedding (the mean of the raw ones) points.
    clips = ds.dataset(f"{labelled_archive['output']}/clips", format="parquet", partitioning="hive").to_table()
    stored = np.asarray(clips.filter(ds.field("clip_id") == clip)["embedding"][0].as_py(), np.float32)
    mean = archive.vector_of(clip)
    assert float(mean @ stored / np.linalg.norm(mean) / np.linalg.norm(stored)) > 0.999


def test_filters_still_return_k_hits(labelled_archive, archive):
    query = archive.vector_of(labelled_archive["long"][0], 8)
    prefix = os.path.dirname(labelled_archive["pattern"][0]) + "/pattern-"
    hits = search(vector=query, k=7, archive=archive, where=[f"source_prefix={prefix}"])
    assert hits.num_rows == 7 and all(c.startswith(prefix) for c in hits["clip_id"].to_pylist())
    truth, _ = _exact_truth(labelled_archive["output"], query, 7, lambda r: r["source_uri"].startswith(prefix))
    assert [(h["clip_id"], h["window_index"]) for h in hits.to_pylist()] == truth
    # A label filter: every hit carries the label; as many hits as match when fewer than k do.
    label_rows = ds.dataset(f"{labelled_archive['output']}/segments", format="parquet",
                            partitioning="hive").to_table(columns=["labels"]).to_pylist()
    counts = {}
    for r in label_rows:
        for lab in r["labels"]:
            counts[lab["label"]] = counts.get(lab["label"], 0) + 1
    rare = min(counts, key=counts.get)
    hits = search(vector=query, k=counts[rare] + 5, archive=archive, where=[f"label={rare}"])
    assert hits.num_rows == counts[rare]
    assert all(rare in [lab["label"] for lab in labels] for labels in hits["labels"].to_pylist())
    # A time range: windows overlapping 30..35 s of their source (only the long files reach it).
    hits = search(vector=query, k=10, archive=archive, where=["time=30:35"])
    assert hits.num_rows == 10 and all(h["end_seconds"] > 30 and h["start_seconds"] < 35 for h in hits.to_pylist())
    assert search(vector=query, k=3, archive=archive, where=["run_id=nope"]).num_rows == 0
    with pytest.raises(ValueError, match="KEY=VALUE"):
        search(vector=query, k=3, archive=archive, where=["colour=red"])


def test_approximate_index_reranks_to_exact(labelled_archive, tmp_path):
    """Above --exact_max the partition gets IVF-SQ8; its candidates are re-ranked exactly."""
    output = copy_archive(labelled_archive, str(tmp_path / "out"))
    report = build(output, exact_max=100)    # 593 vectors > 100: rebuilt approximate
    assert report.kinds == {"r1": "ivf_sq8"}
    archive = open_archive(output)
    partition = archive.partitions[0]
    assert partition.ann is not None and partition.ann.nlist == 32
    overlaps = []
    windows = list(zip(partition.rows["clip_id"].to_pylist(), partition.rows["window_index"].to_pylist()))
    for clip in labelled_archive["pattern"][:5] + labelled_archive["other"][:5]:
        query = archive.vector_of(clip)
        exact_scores, exact_ids = partition.exact(query / np.linalg.norm(query), 10)
        hits = archive.search(query, 10)
        overlaps.append(len({windows[i] for i in exact_ids.tolist()} & set(
            zip(hits["clip_id"].to_pylist(), hits["window_index"].to_pylist()))) / 10)
        full = archive.search(query, 10, nprobe=partition.ann.nlist)   # every cell: the exact answer
        np.testing.assert_allclose(full["similarity"].to_numpy(), exact_scores, atol=1e-5)
    print("IVF-SQ8 top-10 overlap with exact:", overlaps)
    assert np.mean(overlaps) >= 0.9
    # Filtered inside the probed cells (the filter matches more rows than exact_max, so the IVF
    # search runs with the filter as its ID selector), still k hits when k match.
    prefix = os.path.dirname(labelled_archive["other"][0]) + "/other-"
    matching = sum(c.startswith(prefix) for c, _ in windows)
    assert matching > partition.exact_max
    selectors = []
    approximate = partition._approximate
    partition._approximate = lambda query, candidates, allowed, *rest: (
        selectors.append(allowed), approximate(query, candidates, allowed, *rest))[1]
    hits = archive.search(archive.vector_of(labelled_archive["pattern"][0]), 20, [f"source_prefix={prefix}"])
    assert len(selectors) == 1 and int(selectors[0].sum()) == matching
    assert hits.num_rows == 20 and all(c.startswith(prefix) for c in hits["clip_id"].to_pylist())


def test_nightly_partitions_superseded_rows_and_reruns(labelled_archive, tmp_path):
    output = copy_archive(labelled_archive, str(tmp_path / "out"))
    relabelled = labelled_archive["long"][1]
    r1_build = json.load(open(partition_manifest_path(output, "segments", "r1")))["build"]
    label(relabelled, output, labelled_archive["model"], "r2")          # a later run relabels one clip
    report = build(output)
    assert report.built == ["r2"] and report.up_to_date == ["r1"]      # r1's partition is not rebuilt
    assert json.load(open(partition_manifest_path(output, "segments", "r1")))["build"] == r1_build
    archive = open_archive(output)
    hits = search(audio=labelled_archive["snippet"], k=60, archive=archive).to_pylist()
    keys = [(h["clip_id"], h["window_index"]) for h in hits]
    assert len(keys) == len(set(keys))                                  # no window twice
    assert {h["run_id"] for h in hits if h["clip_id"] == relabelled} == {"r2"}
    assert {h["run_id"] for h in hits if h["clip_id"] != relabelled} == {"r1"}
    places = search(audio=labelled_archive["snippet"], k=3, archive=archive, one_per_clip=True).to_pylist()
    assert [p["run_id"] for p in places if p["clip_id"] == relabelled] == ["r2"]
    # The clips-level index: the relabelled clip once, from r2.
    build(output, level="clips")
    clips = search(clip=relabelled, k=5, level="clips", output=output).to_pylist()
    assert [(c["clip_id"], c["run_id"]) for c in clips if c["clip_id"] == relabelled] == [(relabelled, "r2")]
    # A rerun of r2 makes its partition stale; the next build replaces it and removes the old build.
    old = json.load(open(partition_manifest_path(output, "segments", "r2")))["build"]
    label(relabelled, output, labelled_archive["model"], "r2")
    assert any("earlier attempt" in n for n in open_archive(output).notes)
    report = build(output)
    assert report.built == ["r2"] and sorted(report.up_to_date) == ["r1"]
    new = json.load(open(partition_manifest_path(output, "segments", "r2")))["build"]
    assert new != old and not os.path.exists(os.path.join(output, "_index", "segments", "r2", old))
    # r2's partition indexed with another embedding fingerprint: not searched, yet its relabelling
    # still hides r1's rows of the clip (the clip is not returned at all).
    path = partition_manifest_path(output, "segments", "r2")
    manifest = json.load(open(path))
    manifest["embedding_fingerprint"] = "0" * 64
    json.dump(manifest, open(path, "w"))
    archive = open_archive(output)
    assert [p.run_id for p in archive.partitions] == ["r1"]
    assert any("another embedding fingerprint" in n for n in archive.notes)
    hits = search(audio=labelled_archive["snippet"], k=60, archive=archive).to_pylist()
    assert hits and relabelled not in {h["clip_id"] for h in hits}


def test_mixed_fingerprints_are_refused(labelled_archive, tmp_path, capsys):
    other_model = write_checkpoint(str(tmp_path / "other_model"), TinyASTSpec(), seed=1)
    output = str(tmp_path / "out")
    few = labelled_archive["other"][:3]
    label(few, output, labelled_archive["model"], "a")
    label(few, output, other_model, "b")
    assert index_main(["build", "--output", output]) == 2
    message = capsys.readouterr().err
    assert "different embedding fingerprints" in message
    # Each fingerprint (its first 12 hex digits) followed by the runs made with it.
    assert re.search(r"\b[0-9a-f]{12}: a;", message) and re.search(r"\b[0-9a-f]{12}: b;", message), message
    assert index_main(["build", "--output", output, "--runs", "a"]) == 0
    assert index_main(["build", "--output", output, "--runs", "b"]) == 2
    assert "cannot join it" in capsys.readouterr().err
    # A query embedded with another model is refused too.
    with pytest.raises(FingerprintMismatch, match="not comparable"):
        search(output, audio=few[0], model=other_model)
    assert search_main(["--output", output, "--audio", few[0], "--model", other_model]) == 2
    # Runs labelled without embeddings are skipped, not refused.
    label(few, output, labelled_archive["model"], "c")
    shutil.rmtree(os.path.join(output, "segments", "run_id=c"))   # (only its manifest matters here)
    manifest = json.load(open(os.path.join(output, "_runs", "c", "_MANIFEST.json")))
    manifest["settings"]["emit_embeddings"] = None
    json.dump(manifest, open(os.path.join(output, "_runs", "c", "_MANIFEST.json"), "w"))
    report = build(output, runs=["a", "c"])
    assert "emit_embeddings" in report.skipped["c"]


def test_command_line_and_html_page(labelled_archive, tmp_path, capsys):
    output = copy_archive(labelled_archive, str(tmp_path / "out"))
    page = str(tmp_path / "page" / "hits.html")
    gone = labelled_archive["other"][0]
    # A hit whose source is gone: listed, without a player.
    assert search_main(["--output", output, "--clip", gone, "--k", "4", "--html", page,
                        "--results", str(tmp_path / "hits.csv")]) == 0
    printed = capsys.readouterr().out
    assert gone in printed and "wrote" in printed
    html = open(page).read()
    players = html.count("<audio controls")
    assert players == 4
    for n in range(1, 5):
        data, rate = soundfile.read(os.path.join(tmp_path, "page", "hits_audio", f"hit-{n:02d}.wav"))
        assert rate == 8000 and 0.9 * rate <= len(data) <= 10.3 * rate
    moved = str(tmp_path / "moved.wav")
    shutil.move(gone, moved)
    try:
        assert search_main(["--output", output, "--clip", gone, "--k", "2", "--html", page]) == 0
        html = open(page).read()
        assert html.count("<audio controls") == 1 and "source not readable" in html
    finally:
        shutil.move(moved, gone)
    assert search_main(["--output", str(tmp_path / "nothing"), "--clip", gone]) == 2
    assert "python -m pipeline.index build" in capsys.readouterr().err


def test_index_on_object_storage(labelled_archive, s3_server, tmp_path, monkeypatch):
    """Built on SeaweedFS (S3) and searched from there: the partition is copied to a local cache
    for memory-mapping; the hits equal the local index's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    fs = s3_server.filesystem()
    root = f"{s3_server.bucket}/search-{os.getpid()}"
    for table in ("clips", "segments", "errors", "_runs"):
        fs.put(os.path.join(labelled_archive["output"], table), f"{root}/", recursive=True)
    url = f"s3://{root}"
    options = {"client_kwargs": {"endpoint_url": s3_server.endpoint}}
    report = build(url, storage_options=options)
    assert report.built == ["r1"]
    assert fs.exists(f"{root}/_index/segments/r1/_MANIFEST.json")
    remote = open_archive(url, storage_options=options)
    local = open_archive(labelled_archive["output"])
    query = local.vector_of(labelled_archive["long"][2], 13)
    a, b = remote.search(query, 8), local.search(query, 8)
    assert a.select(["clip_id", "window_index"]).equals(b.select(["clip_id", "window_index"]))
    np.testing.assert_allclose(a["similarity"].to_numpy(), b["similarity"].to_numpy(), atol=1e-6)
    # Searched from a local copy in the machine cache, not from the local output's own index.
    folder = os.path.realpath(remote.partitions[0].folder)
    assert os.path.isdir(folder)
    assert os.path.commonpath([folder, os.path.realpath(labelled_archive["output"])]) != \
        os.path.realpath(labelled_archive["output"])
    # Opened again: the same copy, downloaded once; no temp folder left beside it.
    assert open_archive(url, storage_options=options).partitions[0].folder == remote.partitions[0].folder
    assert not [n for n in os.listdir(os.path.dirname(folder)) if n.startswith(".")]
