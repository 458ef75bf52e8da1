"""A run that finds no audio at all exits non-zero and publishes nothing, unless --allow_empty."""

from pipeline.main import main
from pipeline.runs.publish import finished_runs, read_manifest


def test_nothing_discovered_fails_and_publishes_nothing(tmp_path, tiny_checkpoint, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    manifest = tmp_path / "nothing.txt"
    manifest.write_text("# an empty list\n")
    out = str(tmp_path / "labels")
    base = ["--input", str(empty), "--input_manifest", str(manifest), "--model", tiny_checkpoint,
            "--output", out]
    assert main(base + ["--run_id", "empty"]) == 1
    err = capsys.readouterr().err
    assert "no audio file or shard was found" in err and "--allow_empty" in err
    assert finished_runs(out) == []

    assert main(base + ["--run_id", "allowed", "--allow_empty"]) == 0
    assert finished_runs(out) == ["allowed"]
    counts = read_manifest(out, "allowed")["counts"]
    # The pattern that matched nothing is the run's one input, and it errored.
    assert counts == {"discovered": 1, "labelled": 0, "errored": 1, "skipped": 0,
                      "errors_by_type": {"discover/NoFilesMatched": 1}}
