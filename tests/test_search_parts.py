"""Small parts of search and custom classes, without a labelled archive: the embedding
fingerprint, --where parsing, the saved classifier, and a partition's exact and approximate
search against brute force."""
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.launch.options import LabelAudioOptions
from pipeline.vectors.build import ROWS_SCHEMA
from pipeline.vectors.partition import Partition, PartitionWriter, build_ann, write_ipc
from pipeline.vectors.where import Where
from transforms.audio.windowing import WindowGeometry
from transforms.io.checkpoint import inspect_checkpoint
from transforms.scoring.custom_classes import LinearClassifier, dumps, loads
from transforms.scoring.fingerprint import embedding_fingerprint, embedding_inputs, run_fingerprint
from transforms.scoring.labels import LabelSelection


def _recorded_inputs(checkpoint, *argv):
    opts = PipelineOptions(["--model", checkpoint.uri, *argv]).view_as(LabelAudioOptions)
    selection = LabelSelection.load(checkpoint.labels, opts.top_k, opts.threshold, None, None)
    return run_fingerprint(opts, checkpoint, selection)[1]


def test_embedding_fingerprint_ignores_label_settings_only(tiny_checkpoint):
    checkpoint = inspect_checkpoint(tiny_checkpoint)
    base = embedding_fingerprint(_recorded_inputs(checkpoint))
    for argv in (["--top_k", "2"], ["--threshold", "0.3"], ["--aggregate", "mean"], ["--activation", "softmax"],
                 ["--emit_scores"], ["--emit_embeddings"]):
        assert embedding_fingerprint(_recorded_inputs(checkpoint, *argv)) == base, argv
    assert embedding_fingerprint(_recorded_inputs(checkpoint, "--hop_seconds", "5.12")) != base
    # What the query side computes from the checkpoint alone equals what a manifest records.
    geometry = WindowGeometry.for_features(checkpoint.features, None)
    assert embedding_fingerprint(embedding_inputs(checkpoint, geometry)) == base
    with pytest.raises(KeyError, match="window"):
        embedding_fingerprint({"weights_sha256": "x", "config_sha256": "y", "features": {}})


def test_where_parsing():
    where = Where.parse(["label=Dog", "label=Cat", "time=:30", "source_prefix=s3://a/", "labelled_after=2026-12-01"])
    assert where.labels == ("Dog", "Cat") and where.spans == ((None, 30.0),) and not where.empty
    assert Where.parse([]).empty and Where.parse(["run_id=r"]).admits_run("r") and not Where.parse(["run_id=r"]).admits_run("s")
    for bad in ("label", "colour=red", "time=5:1", "time=x:y", "labelled_before=yesterday"):
        with pytest.raises(ValueError):
            Where.parse([bad])


def test_saved_classifier_round_trip_and_id():
    rng = np.random.default_rng(0)
    c = LinearClassifier("jingle", ("a", "b"), rng.standard_normal((2, 8)).astype(np.float32),
                         np.zeros(2, np.float32), np.full(2, 0.5, np.float32), "f" * 64)
    again = loads(dumps(c))
    assert again.classifier_id == c.classifier_id and again.classifier_id.startswith("jingle-")
    x = rng.standard_normal((5, 8))
    np.testing.assert_allclose(again.scores(x), c.scores(x))
    np.testing.assert_allclose(c.scores(x * 3), c.scores(x), atol=1e-6)   # scores normalised embeddings
    changed = LinearClassifier("jingle", ("a", "b"), c.weights * 2, c.bias, c.thresholds, c.embedding_fingerprint)
    assert changed.classifier_id != c.classifier_id
    with pytest.raises(ValueError):
        LinearClassifier("no spaces please", ("a",), np.zeros((1, 8)), np.zeros(1), np.zeros(1), "f")
    with pytest.raises(ValueError, match="takes"):
        c.scores(np.zeros((2, 7)))


def test_partition_search_against_brute_force(tmp_path):
    rng = np.random.default_rng(1)
    n, d = 3000, 16
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    writer = PartitionWriter(str(tmp_path), n, ROWS_SCHEMA)
    ids = np.arange(n)
    writer.add(pa.RecordBatch.from_arrays([
        pa.array([f"c{i}" for i in ids]), pa.array([f"c{i}" for i in ids]), pa.array(np.zeros(n), pa.int32()),
        pa.array(np.zeros(n)), pa.array(np.ones(n)), pa.nulls(n, ROWS_SCHEMA.field("labels").type),
        pa.array(["r"] * n), pa.array(ids, pa.int32())], schema=ROWS_SCHEMA), x)
    vectors = writer.finish()
    write_ipc(str(tmp_path / "clips.arrow"), pa.table({"clip_id": [f"c{i}" for i in ids]}))
    import faiss

    faiss.write_index(build_ann(vectors, 32), str(tmp_path / "ann.faiss"))
    partition = Partition(str(tmp_path), {"run_id": "r", "nprobe": 8, "exact_max": 100})
    allowed = rng.random(n) < 0.3
    for q in x[:20]:
        truth = np.argsort(-(x @ q), kind="stable")[:10]
        scores, found = partition.exact(q, 10)
        assert found.tolist() == truth.tolist()
        approx_scores, approx = partition.search(q, 10, nprobe=32)   # every cell: exact after rerank
        assert approx.tolist() == truth.tolist()
        np.testing.assert_allclose(approx_scores, x[truth] @ q, atol=1e-6)
        kept = np.flatnonzero(allowed)
        truth = kept[np.argsort(-(x[kept] @ q), kind="stable")[:10]]
        assert partition.search(q, 10, allowed, nprobe=32)[1].tolist() == truth.tolist()
    few = np.zeros(n, bool)
    few[[5, 900, 2999]] = True          # fewer matches than k: all of them, best first
    scores, got = partition.search(x[0], 10, few)
    assert got.tolist() == sorted([5, 900, 2999], key=lambda i: -float(x[i] @ x[0]))
    np.testing.assert_allclose(scores, x[got] @ x[0], atol=1e-6)


def test_audio_span_read_in_order_and_sliced(tmp_path):
    """--start/--end and the page's windows: the span's samples exactly, across read blocks, from
    libsndfile's formats and FFmpeg's (PCM in Matroska, which libsndfile cannot open)."""
    import soundfile

    from pipeline.vectors.audio_span import read_span
    from pipeline.vectors.query import cut_span
    from tests.ffmpeg_media import ffmpeg
    from transforms.audio.open_audio import open_audio

    rate = 8000
    data = (np.random.default_rng(3).uniform(-0.5, 0.5, (3 * rate, 2)) * 32767).astype(np.int16) / 32768
    wav = str(tmp_path / "a.wav")
    soundfile.write(wav, data, rate, subtype="PCM_16")
    mka = str(tmp_path / "a.mka")
    ffmpeg("-i", wav, "-c:a", "pcm_s16le", mka)
    for path in (wav, mka):
        whole = open_audio(path).read_all()
        assert whole.shape == data.shape, path
        samples, header = read_span(path, 0.3, 1.71, block_frames=1000)
        assert header.original_sample_rate == rate
        np.testing.assert_array_equal(samples, whole[round(0.3 * rate):round(1.71 * rate)])
        samples, _ = read_span(path, 2.5, 9.0, to_frame=int, block_frames=999)   # past the end: what there is
        np.testing.assert_array_equal(samples, whole[int(2.5 * rate):])
        assert len(read_span(path, 4.0, 5.0)[0]) == 0
        with open(path, "rb") as f:
            cut, got_rate = soundfile.read(cut_span(f, 1.0, 1.5), dtype="float32", always_2d=True)
        assert got_rate == rate
        np.testing.assert_array_equal(cut, whole[rate:round(1.5 * rate)])
        with open(path, "rb") as f, pytest.raises(ValueError, match="empty span"):
            cut_span(f, 3.5, None)
