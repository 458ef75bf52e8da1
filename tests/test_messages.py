"""Messages a user acts on: every launch error names its option and value; a failed run prints its
counts by stage and type, its first error rows and the attempt folder it left; a glob matching
nothing prints the pattern and why; --dry_run prints what would be read and runs nothing."""
import os

import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import main
from pipeline.runs.layout import run_meta_dir
from pipeline.runs.publish import finished_runs
from tests.shard_corpus import audio_bytes, make_tar


def launch_error(tmp_path, tiny_checkpoint, capsys, *extra) -> str:
    code = main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--model", tiny_checkpoint,
                 *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert not os.path.exists(tmp_path / "out" / "_runs")   # refused before any run began
    return err


@pytest.mark.parametrize("extra, named", [
    (["--label_map", "missing.csv"], ("--label_map", "missing.csv", "No such file")),
    (["--class_thresholds", "nowhere.csv"], ("--class_thresholds", "nowhere.csv", "No such file")),
    (["--threshold", "1.5"], "--threshold 1.5: must be a number in [0, 1]"),
    (["--top_k", "0"], "--top_k 0: must be at least 1"),
    (["--batch_size", "0"], "--batch_size 0: must be at least 1"),
    (["--model_copies", "0"], "--model_copies 0: must be at least 1"),
    (["--hop_seconds", "-1"], "--hop_seconds -1: must be more than 0"),
    (["--hop_seconds", "99"], ("--hop_seconds", "at most the model's window of 10.24 s, got 99")),
    (["--max_duration_seconds", "0"], "--max_duration_seconds 0: must be more than 0"),
    (["--progress_seconds", "-5"], "--progress_seconds -5: must be 0 or more"),
    (["--emit_embeddings", "float16"], "--emit_embeddings float16 is no longer offered"),
    (["--emit_embeddings", "int8"], "--emit_embeddings int8: "),
    (["--max_error_fraction", "1.5"], "--max_error_fraction must be between 0 and 1"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_launch_error_names_its_option_and_value(tmp_path, tiny_checkpoint, capsys, extra, named):
    err = launch_error(tmp_path, tiny_checkpoint, capsys, *extra)
    assert err.startswith(f"error: {extra[0]}"), err
    for part in (named,) if isinstance(named, str) else named:
        assert part in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_missing_label_map_file_is_named(tmp_path, tiny_checkpoint, capsys):
    err = launch_error(tmp_path, tiny_checkpoint, capsys, "--label_map", str(tmp_path / "missing.csv"))
    assert f"--label_map: " in err and str(tmp_path / "missing.csv") in err and "No such file" in err, err


def test_a_bad_model_directory_is_named_as_model(tmp_path, tiny_checkpoint, capsys):
    code = main(["--input", str(tmp_path), "--output", str(tmp_path / "out"), "--model", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --model: ") and str(tmp_path / "nope") in err, err


def test_a_bad_value_of_a_known_option_names_it(tmp_path, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit) as info:   # argparse's own message, through Beam's parser
        main(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--model", tiny_checkpoint,
              "--log_level", "chatty"])
    assert info.value.code == 2
    assert "--log_level: invalid choice: 'CHATTY'" in capsys.readouterr().err


# ---------------------------------------------------------------- failed runs

def test_a_failed_run_prints_counts_first_errors_and_its_attempt_folder(tmp_path, tiny_checkpoint, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    write_audio(str(audio / "good.wav"), tone(1.0, 16000), 16000)
    (audio / "bad_0.wav").write_bytes(b"RIFF not really a wave file" * 10)
    (audio / "bad_1.flac").write_bytes(os.urandom(3000))
    out = tmp_path / "out"
    code = main(["--input", str(audio), "--output", str(out), "--model", tiny_checkpoint, "--run_id", "r",
                 "--max_error_fraction", "0.5", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and finished_runs(str(out)) == []
    assert "2 of 3 discovered inputs (66.7%) ended in the errors table" in err
    assert "  counts: 3 discovered, 1 labelled, 2 errored, 0 skipped" in err
    assert "  errors by stage/type: decode/AudioDecodeError: 2" in err
    assert "  first errors (2 of 2):" in err
    for name in ("bad_0.wav", "bad_1.flac"):
        path = str(audio / name)
        assert f"    {path}  [decode] AudioDecodeError: {path}: not a readable audio file" in err \
            or f"    {path}  [decode] AudioDecodeError: not a readable audio file: Error opening {path!r}" in err, err
    [attempt] = [d for d in os.listdir(run_meta_dir(str(out), "r")) if not d.startswith("_")]
    folder = os.path.join(str(out), "_runs", "r", attempt)
    assert f"  nothing published; the attempt's files are left in {folder}/" in err
    assert os.path.isdir(os.path.join(folder, "errors"))
    assert "progress:" not in err      # -q: no progress line


def test_a_glob_matching_nothing_prints_the_pattern_and_why(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    (tmp_path / "audio").mkdir()
    pattern = str(tmp_path / "audio" / "*.wav")
    monkeypatch.chdir(tmp_path)
    code = main(["--input", pattern, "--output", "out", "--model", tiny_checkpoint, "--run_id", "empty"])
    err = capsys.readouterr().err
    assert code == 1
    assert "no audio file or shard was found (1 input(s) failed discovery, listed below)" in err
    assert f"    {pattern}  [discover] NoFilesMatched: no audio files or shards match {pattern!r}" in err
    # A relative --output is shown as the full path of the folder left behind.
    left = [line for line in err.splitlines() if "the attempt's files are left in" in line]
    assert left and left[0].split(" left in ")[1].startswith(str(tmp_path / "out" / "_runs" / "empty") + "/")


# ---------------------------------------------------------------- --dry_run

def test_dry_run_prints_what_would_be_read_and_runs_nothing(tmp_path, tiny_checkpoint, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    write_audio(str(audio / "a.wav"), tone(1.0, 16000), 16000)
    write_audio(str(audio / "b.wav"), noise(0.5, 8000), 8000)
    write_audio(str(audio / "c.flac"), tone(0.5, 22050), 22050)
    (audio / "shard-000.tar").write_bytes(make_tar([("0.wav", audio_bytes("wav", tone(0.5, 16000), 16000))]))
    (audio / "notes.txt").write_text("not audio")
    missing = str(tmp_path / "elsewhere" / "*.mp3")
    out = tmp_path / "out"
    code = main(["--input", str(audio), "--input", missing, "--output", str(out), "--model", tiny_checkpoint,
                 "--dry_run"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = captured.out
    sizes = {n: os.path.getsize(audio / n) for n in ("a.wav", "b.wav", "c.flac", "shard-000.tar")}
    assert "dry run: nothing was run or written" in report
    assert f"would read 4 source(s), {sum(sizes.values()) / 1024:.1f} KiB:" in report, report
    assert f"    audio file (.wav): 2, {(sizes['a.wav'] + sizes['b.wav']) / 1024:.1f} KiB" in report
    assert f"    audio file (.flac): 1, {sizes['c.flac'] / 1024:.1f} KiB" in report
    assert f"    tar shard: 1, {sizes['shard-000.tar'] / 1024:.1f} KiB" in report
    assert "  first 4:" in report and f"    {audio / 'a.wav'}" in report
    assert "  1 input(s) would fail discovery (error rows):" in report
    assert f"    {missing}  [discover] NoFilesMatched" in report
    assert not os.path.exists(out / "_runs")     # no run id, lease or attempt folder
    assert os.listdir(out) == []                 # the write probe was removed again


def test_dry_run_still_checks_the_options(tmp_path, tiny_checkpoint, capsys):
    err = launch_error(tmp_path, tiny_checkpoint, capsys, "--dry_run", "--top_k", "0")
    assert "--top_k 0" in err
