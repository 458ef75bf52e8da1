"""--emit_embeddings, --emit_scores, --threshold and the silent flag, through a real run."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import main, run
from pipeline.runs.layout import published_table_dir
from schemas.tables import CLIPS_SCHEMA, SEGMENTS_SCHEMA
from transforms.io.checkpoint import inspect_checkpoint
from transforms.scoring.labels import activate
from transforms.mindspore_inference import load_runner
from transforms.audio.windowing import iter_windows


@pytest.fixture(scope="module")
def emitted(tiny_checkpoint, tmp_path_factory):
    audio = tmp_path_factory.mktemp("audio")
    write_audio(str(audio / "tone.wav"), tone(3.0, 16000, 440.0), 16000)
    write_audio(str(audio / "noise_15s.flac"), noise(15.0, 22050, 5), 22050)   # two windows
    write_audio(str(audio / "silence.wav"), np.zeros(16000 * 2), 16000)
    out = str(tmp_path_factory.mktemp("out"))
    summary = run(["--input", str(audio), "--output", out, "--model", tiny_checkpoint,
                   "--run_id", "emit", "--batch_size", "2", "--emit_scores", "--emit_embeddings", "float32",
                   "--top_k", "6", "--threshold", "0.9"])
    segments = pq.read_table(published_table_dir(out, "emit", "segments")).to_pylist()
    return str(audio), summary.clips.to_pylist(), segments


def _direct(tiny_checkpoint, path):
    info = inspect_checkpoint(tiny_checkpoint)
    features = np.stack([w.features for w in iter_windows(path, info.features)])
    logits, pooled = load_runner(tiny_checkpoint, "native", 2).predict(features)
    return activate(logits, "sigmoid"), pooled


def test_embedding_is_the_pooled_output(emitted, tiny_checkpoint):
    audio, clips, segments = emitted
    for name in ("tone.wav", "noise_15s.flac"):
        path = os.path.join(audio, name)
        scores, pooled = _direct(tiny_checkpoint, path)
        clip = next(c for c in clips if c["source_uri"] == path)
        segs = sorted((s for s in segments if s["source_uri"] == path), key=lambda s: s["window_index"])
        assert len(segs) == len(pooled) == clip["num_windows"]
        for seg, expected in zip(segs, pooled):
            np.testing.assert_allclose(seg["embedding"], expected, atol=1e-5)
        # A clip's embedding is the mean over its windows; its scores are the max (default).
        np.testing.assert_allclose(clip["embedding"], pooled.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(clip["scores"], scores.max(axis=0), atol=1e-5)


def test_threshold_within_top_k(emitted):
    _, clips, segments = emitted
    for row in clips + segments:
        scores = np.asarray(row["scores"])
        top6 = set(np.argsort(-scores, kind="stable")[:6])
        expected = [i for i in np.argsort(-scores, kind="stable") if i in top6 and scores[i] >= 0.9]
        assert [lab["index"] for lab in row["labels"]] == expected
    assert any(len(row["labels"]) < 6 for row in clips + segments), "threshold never bit: weak test data"


def test_silence_is_labelled_and_flagged(emitted):
    _, clips, _ = emitted
    flags = {os.path.basename(c["source_uri"]): c["silent"] for c in clips}
    assert flags == {"tone.wav": False, "noise_15s.flac": False, "silence.wav": True}


def test_one_schema_whatever_the_options(emitted, tiny_checkpoint, tmp_path):
    """A run without --emit_* writes the same columns, null where not asked for, so readers of
    several runs need no schema merging."""
    audio, _, _ = emitted
    out = str(tmp_path / "plain")
    run(["--input", os.path.join(audio, "tone.wav"), "--output", out, "--model", tiny_checkpoint,
         "--run_id", "plain", "--batch_size", "2"])
    for table, schema in (("clips", CLIPS_SCHEMA), ("segments", SEGMENTS_SCHEMA)):
        plain = pq.read_table(published_table_dir(out, "plain", table))
        assert plain.schema.equals(schema, check_metadata=False), table
        assert plain.num_rows > 0
        assert plain.column("scores").null_count == plain.num_rows
        assert plain.column("embedding").null_count == plain.num_rows


def test_emitted_columns_follow_the_table_schema(emitted):
    _, clips, segments = emitted
    assert CLIPS_SCHEMA.field("embedding").type == pa.list_(pa.float32())
    for row in clips + segments:
        assert row["scores"] is not None and row["embedding"] is not None


def test_float16_embeddings_are_refused_at_launch(tiny_checkpoint, tmp_path, capsys):
    code = main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                 "--emit_embeddings", "float16"])
    assert code == 2
    assert "FLOAT16" in capsys.readouterr().err
