"""Custom classes (python -m pipeline.classify) over the shared labelled archive
(tests/search_corpus.py): a class of generated sounds (three rising chirps) given by 10 positive
and 30 negative windows, found among 500 files with its precision and recall reported; the
custom_labels table's publication, accounting and readers; Iceberg; and `apply` on the
PortableRunner (Beam's job service, an external worker pool with a private /tmp, the archive on
SeaweedFS) giving the DirectRunner's table.
"""
import csv
import json
import os
import time

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.classes.examples import Example, embed_examples
from pipeline.classes.layout import manifest_path
from pipeline.classify import apply, load_classifier, main as classify_main, train
from pipeline.runs.layout import published_table_dir
from pipeline.vectors.archive import Archive
from pipeline.vectors.query import QueryEmbedder
from tests.portable_cluster import PortableCluster, namespaces_available
from tests.search_corpus import SNIPPET_OFFSETS, copy_archive

# The shared archive takes 1-2 minutes to label on 2 cores (once per session).
pytestmark = pytest.mark.slow
POSITIVES, NEGATIVES = 10, 30
TIMINGS = {}


def write_examples(archive: dict, path: str) -> str:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "polarity", "clip_id", "window"])
        w.writerows(["rising_chirps", "positive", c, 0] for c in archive["pattern"][:POSITIVES])
        w.writerows(["rising_chirps", "negative", c, 0] for c in archive["other"][:NEGATIVES])
    return path


@pytest.fixture(scope="module")
def classified(labelled_archive, tmp_path_factory):
    """The classifier trained from the examples and applied (DirectRunner) to a copy of the archive."""
    folder = tmp_path_factory.mktemp("classify")
    output = copy_archive(labelled_archive, str(folder / "out"))
    examples = write_examples(labelled_archive, str(folder / "examples.csv"))
    started = time.monotonic()
    assert classify_main(["train", "--output", output, "--examples", examples, "--name", "rising_chirps",
                          "--classifier_out", str(folder / "classifier")]) == 0
    TIMINGS["train"] = time.monotonic() - started
    started = time.monotonic()
    assert classify_main(["apply", "--output", output, "--classifier", str(folder / "classifier")]) == 0
    TIMINGS["apply (DirectRunner)"] = time.monotonic() - started
    classifier = load_classifier(str(folder / "classifier"))
    table = published_table_dir(output, "r1", f"custom_labels/classifier={classifier.classifier_id}")
    return {"output": output, "classifier": classifier, "folder": str(folder), "table": table,
            "examples": examples}


def test_class_found_with_precision_and_recall(labelled_archive, classified, capsys):
    classifier = classified["classifier"]
    fit = classifier.metrics["rising_chirps"]
    assert (fit["positives"], fit["negatives"]) == (POSITIVES, NEGATIVES)
    rows = pq.read_table(classified["table"]).to_pylist()
    pattern, other = set(labelled_archive["pattern"]), set(labelled_archive["other"])
    # Judged on the files no example came from.
    seen = set(labelled_archive["pattern"][:POSITIVES]) | set(labelled_archive["other"][:NEGATIVES])
    judged = [r for r in rows if r["clip_id"] not in seen and r["clip_id"] in pattern | other]
    tp = sum(r["positive"] and r["clip_id"] in pattern for r in judged)
    fp = sum(r["positive"] and r["clip_id"] in other for r in judged)
    fn = sum(not r["positive"] and r["clip_id"] in pattern for r in judged)
    precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
    long_positive = sum(r["positive"] for r in rows if r["clip_id"] in labelled_archive["long"])
    print(f"custom class over {len(judged)} unseen files: precision {precision:.3f}, recall {recall:.3f} "
          f"(tp {tp}, fp {fp}, fn {fn}); cross-validated on the examples: precision "
          f"{fit['cv_precision']:.3f}, recall {fit['cv_recall']:.3f}; long-file windows called positive: "
          f"{long_positive}; timings {TIMINGS}")
    assert recall >= 0.9 and precision >= 0.5


def test_custom_labels_published_like_every_table(labelled_archive, classified):
    output, classifier = classified["output"], classified["classifier"]
    manifest = json.load(open(manifest_path(output, classifier.classifier_id, "r1")))
    segments = labelled_archive["summary"].segment_rows
    assert manifest["counts"]["windows"] == segments and manifest["counts"]["rows"] == segments
    assert manifest["counts"]["clips"] == labelled_archive["summary"].labelled
    [path] = manifest["files"][f"custom_labels/classifier={classifier.classifier_id}"]
    assert os.path.exists(os.path.join(output, path)) and os.listdir(classified["table"]) == [os.path.basename(path)]
    rows = pq.read_table(classified["table"])
    assert rows.num_rows == segments and set(rows["classifier_id"].to_pylist()) == {classifier.classifier_id}
    assert rows.filter(ds.field("labelled_at").is_null()).num_rows == 0
    # Scored from the stored embeddings: the classifier's own arithmetic on the segments table.
    segs = ds.dataset(f"{output}/segments", format="parquet", partitioning="hive").to_table().to_pylist()
    expected = {(s["clip_id"], s["window_index"]): classifier.scores(np.asarray([s["embedding"]]))[0, 0] for s in segs}
    got = {(r["clip_id"], r["window_index"]): r["score"] for r in rows.to_pylist()}
    assert got.keys() == expected.keys()
    np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), atol=1e-6)
    # Applied again: up to date, nothing rewritten.
    report = apply(output, classifier)
    assert report.up_to_date == ["r1"] and not report.published


@pytest.mark.parametrize("reader", ["spark", "duckdb", "polars", "pandas", "pyarrow"])
def test_every_reader_reads_custom_labels(classified, reader, request):
    folder = classified["table"]
    want = sorted((r["clip_id"], r["window_index"], r["label"], round(r["score"], 6), r["positive"])
                  for r in pq.read_table(folder).to_pylist())
    if reader == "spark":
        records = [r.asDict() for r in request.getfixturevalue("spark").read.parquet(folder).collect()]
    elif reader == "duckdb":
        records = duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet')").arrow().read_all().to_pylist()
    elif reader == "polars":
        records = pl.read_parquet(f"{folder}/*.parquet").to_dicts()
    elif reader == "pandas":
        records = pd.read_parquet(folder).to_dict("records")
    else:
        records = ds.dataset(f"{classified['output']}/custom_labels", format="parquet",
                             partitioning="hive").to_table().to_pylist()
    got = sorted((r["clip_id"], r["window_index"], r["label"], round(float(r["score"]), 6), bool(r["positive"]))
                 for r in records)
    assert got == want


def test_current_custom_labels_in_duckdb(classified):
    """Every classifier and run at once, with the current-labels rule (docs/search.md)."""
    root = f"{classified['output']}/custom_labels"
    n = duckdb.sql(f"""
        WITH rows AS (SELECT * FROM read_parquet('{root}/*/*/*.parquet')),
        latest AS (SELECT clip_id, arg_max(run_id, (labelled_at, run_id)) AS run_id FROM rows GROUP BY clip_id)
        SELECT count(*) FROM rows JOIN latest USING (clip_id, run_id) WHERE positive""").fetchall()[0][0]
    assert n == sum(pq.read_table(classified["table"])["positive"].to_pylist())
    # ... and the count the apply published, from the job's own tally.
    manifest = json.load(open(manifest_path(classified["output"], classified["classifier"].classifier_id, "r1")))
    assert n == manifest["counts"]["positive"]


def test_audio_examples_and_refusals(labelled_archive, classified, tmp_path):
    """Examples given as audio files and spans are embedded with the index's checkpoint."""
    examples = tmp_path / "audio.csv"
    with open(examples, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "polarity", "audio", "start", "end"])
        w.writerows(["copy", "positive", p, SPAN[0], SPAN[1]] for p, SPAN in
                    zip(labelled_archive["long"], [(7.3, 17.3), (21.0, 31.0), (13.6, 23.6)]))
        w.writerows(["copy", "negative", p, "", ""] for p in labelled_archive["other"][:4])
    classifier, fits = train(classified["output"], str(examples), name="copies")
    assert fits[0].positives == 3 and fits[0].negatives == 4
    # The span embedded is the one asked for: a span that is a stored window's gives that window's
    # embedding (within 1e-3; measured 6e-5), nearer it than any other window of the file (the
    # tiny model's windows differ by 8e-3 or more).
    archive = Archive.open(classified["output"], "segments")
    segments = ds.dataset(f"{classified['output']}/segments", format="parquet", partitioning="hive").to_table(
        columns=["clip_id", "source_uri", "window_index", "start_seconds", "end_seconds"]).to_pylist()
    windows = sorted((s for s in segments if s["source_uri"].endswith("long/long-0.wav")),
                     key=lambda s: s["window_index"])
    chosen = min(range(len(windows)), key=lambda i: abs(windows[i]["start_seconds"] - SNIPPET_OFFSETS[0]))
    span = Example(2, "copy", True, audio=labelled_archive["long"][0],
                   start=windows[chosen]["start_seconds"], end=windows[chosen]["end_seconds"])
    [embedded] = embed_examples([span], archive, lambda: QueryEmbedder(archive.doc))
    stored = np.stack([archive.vector_of(w["clip_id"], w["window_index"]) for w in windows])
    distance = np.abs(stored - embedded).max(axis=1)
    assert int(np.argmin(distance)) == chosen
    np.testing.assert_allclose(embedded, stored[chosen], atol=1e-3)
    with pytest.raises(ValueError, match="polarity"):
        bad = tmp_path / "bad.csv"
        bad.write_text("label,polarity,clip_id\nx,maybe,a\n")
        train(classified["output"], str(bad))
    # A classifier of another embedding fingerprint scores no run.
    foreign = type(classifier)(**{**classifier.__dict__, "embedding_fingerprint": "0" * 64})
    report = apply(classified["output"], foreign)
    assert not report.published and "not the classifier's" in report.skipped["r1"]


def test_iceberg_when_asked(labelled_archive, tmp_path):
    from pipeline.lakehouse.iceberg_read import open_catalog_for_reading

    output = copy_archive(labelled_archive, str(tmp_path / "out"))
    examples = write_examples(labelled_archive, str(tmp_path / "examples.csv"))
    classifier, _ = train(output, examples, name="rising_chirps")
    report = apply(output, classifier, iceberg_catalog="local")
    assert report.published["r1"]["rows"] == labelled_archive["summary"].segment_rows
    table = open_catalog_for_reading("local", output).load_table("audio_labelling.custom_labels")
    rows = table.scan(row_filter=f"classifier_id == '{classifier.classifier_id}'").to_arrow()
    assert rows.num_rows == labelled_archive["summary"].segment_rows
    manifest = json.load(open(manifest_path(output, classifier.classifier_id, "r1")))
    assert manifest["iceberg"]["snapshot"] == table.current_snapshot().snapshot_id


@pytest.mark.skipif(not namespaces_available(), reason="needs root (unshare -m, mount -t tmpfs) for the worker pool")
def test_apply_on_the_portable_runner_equals_direct(labelled_archive, classified, s3_server, tmp_path, monkeypatch):
    fs = s3_server.filesystem()
    root = f"{s3_server.bucket}/classify-{os.getpid()}"
    for table in ("clips", "segments", "errors", "_runs"):
        fs.put(os.path.join(labelled_archive["output"], table), f"{root}/", recursive=True)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    worker_env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                  "AWS_ENDPOINT_URL_S3": s3_server.endpoint, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    started = time.monotonic()
    with PortableCluster(str(tmp_path / "cluster"), worker_env, pools=1) as cluster:
        TIMINGS["portable cluster start"] = time.monotonic() - started
        started = time.monotonic()
        report = apply(f"s3://{root}", classified["classifier"],
                       cluster.pipeline_args(0) + ["--s3_endpoint_url", s3_server.endpoint, "--s3_disable_ssl"],
                       storage_options={"client_kwargs": {"endpoint_url": s3_server.endpoint}})
        TIMINGS["apply (PortableRunner)"] = time.monotonic() - started
        assert "worker" in cluster.log("pool0").lower()
    print("timings:", TIMINGS)
    assert list(report.published) == ["r1"]
    cid = classified["classifier"].classifier_id
    portable = []
    for path in sorted(fs.glob(f"{root}/custom_labels/classifier={cid}/run_id=r1/*.parquet")):
        with fs.open(path, "rb") as f:
            portable += pq.read_table(f).to_pylist()
    direct = pq.read_table(classified["table"]).to_pylist()
    key = lambda r: (r["clip_id"], r["window_index"], r["label"])  # noqa: E731
    strip = lambda rows: sorted(({k: v for k, v in r.items() if k != "scored_at"} for r in rows), key=key)  # noqa: E731
    assert strip(portable) == strip(direct)
    assert fs.exists(f"{root}/_custom_labels/classifier={cid}/r1/_MANIFEST.json")
