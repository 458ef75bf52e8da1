"""Hostile and corrupt inputs mixed with good files: the run completes and accounts for each."""
import os

import pytest

from pipeline.main import run
from tests.audio_corpus import write_good
from tests.hostile_corpus import write_hostile_inputs


@pytest.fixture(scope="module")
def hostile_run(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    expected = write_hostile_inputs(str(folder))
    good = write_good(str(folder / "good"))
    summary = run(["--input", str(folder), "--output", str(tmp_path_factory.mktemp("out")),
                   "--model", tiny_checkpoint, "--batch_size", "4", "--max_duration_seconds", "3600",
                   "--max_error_fraction", "1.0"])
    return str(folder), expected, good, summary


def test_corpus_is_large_and_varied(hostile_run):
    _, expected, _, _ = hostile_run
    corrupt = [name for name, stage in expected.items() if stage]
    assert len(corrupt) >= 50
    assert {"decode", "features"} <= set(expected.values())


def test_every_corrupt_input_is_one_error_row_with_its_stage(hostile_run):
    folder, expected, _, summary = hostile_run
    errors = summary.errors.to_pylist()
    by_name = {}
    for row in errors:
        name = os.path.relpath(row["source_uri"], folder)
        assert name not in by_name, f"two error rows for {name}"
        by_name[name] = row
    assert {n: r["stage"] for n, r in by_name.items()} == {n: s for n, s in expected.items() if s}
    for name, row in by_name.items():
        assert row["message"] and row["error_type"], name


def test_good_and_readable_files_are_labelled_and_counts_add_up(hostile_run):
    folder, expected, good, summary = hostile_run
    labelled = {os.path.relpath(r["source_uri"], folder) for r in summary.clips.to_pylist()}
    readable = {n for n, s in expected.items() if s is None}
    assert labelled == readable | {os.path.relpath(p, folder) for p in good}
    assert summary.discovered == len(expected) + len(good) == summary.clips.num_rows + summary.errors.num_rows
