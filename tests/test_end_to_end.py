"""The whole job on DirectRunner over a folder of good and broken files."""
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.main import main, run
from pipeline.runs.layout import published_table_dir
from schemas.tables import SCHEMA_VERSION
from tests.audio_corpus import GOOD, write_broken, write_good
from transforms.audio.audio_decode import decode_audio
from schemas.tables import TABLES
from transforms.io.checkpoint import inspect_checkpoint
from transforms.audio.fbank import ast_input_features
from transforms.scoring.labels import activate
from transforms.audio.windowing import WindowGeometry, plan_windows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    good = write_good(str(folder))
    broken = write_broken(str(folder))
    return str(folder), good, broken


@pytest.fixture(scope="module")
def finished_run(corpus, tiny_checkpoint, tmp_path_factory):
    folder, _, _ = corpus
    out = str(tmp_path_factory.mktemp("out"))
    summary = run(["--input", folder, "--output", out, "--model", tiny_checkpoint,
                   "--batch_size", "2", "--run_id", "e2e", "--top_k", "3", "--max_error_fraction", "1.0"])
    return summary, out


def test_every_input_lands_in_exactly_one_table(corpus, finished_run):
    _, good, broken = corpus
    summary, _ = finished_run
    clips, errors = summary.clips.to_pylist(), summary.errors.to_pylist()
    assert sorted(r["source_uri"] for r in clips) == sorted(good)
    assert {os.path.basename(r["source_uri"]): r["stage"] for r in errors} == broken
    assert summary.discovered == len(good) + len(broken) == len(clips) + len(errors)
    for r in errors:
        assert r["message"] and r["error_type"] and r["run_id"] == "e2e"


def test_clip_rows_describe_the_source(corpus, finished_run, tiny_checkpoint):
    summary, _ = finished_run
    info = inspect_checkpoint(tiny_checkpoint)
    by_name = {os.path.basename(r["source_uri"]): r for r in summary.clips.to_pylist()}
    for name, _, rate, channels in GOOD:
        row = by_name[name]
        assert row["original_sample_rate"] == rate and row["channels"] == channels
        assert row["clip_id"] == row["source_uri"]
        assert row["model_sha256"] == info.weights_sha256
        assert len(row["labels"]) == 3
        assert [lab["label"] for lab in row["labels"]] == [info.labels[lab["index"]] for lab in row["labels"]]
    assert by_name["long_noise.wav"]["duration_seconds"] == pytest.approx(12.0)


def test_tables_are_parquet_with_schema_version(finished_run):
    _, out = finished_run
    for table in ("clips", "segments", "errors"):
        folder = published_table_dir(out, "e2e", table)
        files = [f for f in os.listdir(folder) if f.endswith(".parquet")]
        assert files
        schema = pq.read_schema(os.path.join(folder, files[0]))
        assert schema.metadata[b"schema_version"] == SCHEMA_VERSION.encode()
        assert schema.equals(TABLES[table], check_metadata=True)


def test_scores_equal_a_direct_mindnlp_forward(corpus, finished_run, tiny_checkpoint):
    """Pipeline scores (native backend) against MindNLP run by hand on the same audio:
    every 10.24 s window of the whole-file decode, clip score = max over windows."""
    from transforms.model.ast_mindnlp import MindNLPASTRunner

    summary, _ = finished_run
    info = inspect_checkpoint(tiny_checkpoint)
    geometry = WindowGeometry.for_features(info.features)
    reference = MindNLPASTRunner(tiny_checkpoint, batch_size=4)
    _, good, _ = corpus
    expected = []
    for path in good:
        wave = decode_audio(path).waveform
        windows = plan_windows(len(wave), geometry)
        features = np.stack([ast_input_features(wave[a:b], info.features) for a, b in windows])
        logits, _ = reference.predict(features)
        expected.append(activate(logits, "sigmoid").max(axis=0))
    rows = {r["source_uri"]: r for r in summary.clips.to_pylist()}
    assert rows[good[-1]]["num_windows"] == 2      # long_noise.wav: 12 s
    for path, scores in zip(good, expected):
        for lab in rows[path]["labels"]:
            assert lab["score"] == pytest.approx(float(scores[lab["index"]]), abs=1e-5)
        assert [lab["index"] for lab in rows[path]["labels"]] == list(np.argsort(-scores, kind="stable")[:3])


def test_cli_reports_bad_options_in_one_line(tmp_path, tiny_checkpoint, capsys):
    assert main(["--output", str(tmp_path), "--model", tiny_checkpoint]) == 2
    assert "--input or --input_manifest is required" in capsys.readouterr().err
    assert main(["--input", str(tmp_path), "--output", str(tmp_path), "--model", str(tmp_path)]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def test_cli_rejects_unwritable_output_and_unknown_backend(tmp_path, tiny_checkpoint, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    args = ["--input", str(tmp_path), "--model", tiny_checkpoint]
    assert main(args + ["--output", str(blocker / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to --output" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        main(args + ["--output", str(tmp_path / "o"), "--backend", "tensorflow"])
    assert info.value.code == 2
    assert "invalid choice: 'tensorflow'" in capsys.readouterr().err
