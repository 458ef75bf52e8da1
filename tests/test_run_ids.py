"""Run ids are one documented pattern, checked at launch, and a run's life works on exact paths.

Finding 1 of issue 19: ``--run_id '*'`` deleted every other run's files (the retirement globbed
``clips/run_id=*/*``), ``..`` and ``.`` reached outside the run, ``/`` nested folders. Now the launch
refuses such ids (exit 2, one line), and every listing, move and removal of publish, retirement
and reconciliation is exact: an output root whose name holds glob characters is published,
retired and listed like any other (on a local disk and on SeaweedFS). The store-level steps run
here without a Beam job, on small real Parquet files.
"""
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.main import main
from pipeline.runs import store
from pipeline.runs.layout import RUN_ID_MAX_LENGTH, TABLE_NAMES, Attempt, check_run_id, is_run_id
from pipeline.runs.publish import (
    finished_runs, promote, published_table_files, read_manifest, retire_other_attempts, write_manifest)
from pipeline.runs.reconcile import reconcile


@pytest.mark.parametrize("value", ["*", "..", ".", "a/b", "", "x" * (RUN_ID_MAX_LENGTH + 1), "a b", "caf\u00e9",
                                   "run[1]", "?"])
def test_a_run_id_outside_the_pattern_is_refused_at_launch(value, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    code = main(["--input", str(tmp_path), "--output", str(out), "--model", tiny_checkpoint, "--run_id", value])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "--run_id" in err and repr(value) in err, err
    assert not out.exists()   # refused before anything was written


def test_a_run_id_outside_the_pattern_is_refused_for_object_storage_too(s3_server, tmp_path, tiny_checkpoint, capsys):
    out = f"s3://{s3_server.bucket}/ids-{uuid.uuid4().hex[:8]}"
    import json
    code = main(["--input", str(tmp_path), "--output", out, "--model", tiny_checkpoint, "--run_id", "*",
                 "--storage_options", json.dumps(s3_server.storage_options()), *s3_server.beam_s3_args()])
    assert code == 2 and "--run_id '*'" in capsys.readouterr().err
    assert not s3_server.filesystem().exists(out.removeprefix("s3://"))


@pytest.mark.parametrize("command", [["index", "build"], ["classify", "apply", "--classifier", "c"]])
def test_the_search_commands_refuse_a_run_id_outside_the_pattern(command, tmp_path, capsys):
    """``--runs`` of ``index build`` and ``classify apply`` names run ids too: each is checked
    before anything is read (exit 2, naming it)."""
    from pipeline import classify, index

    main_of = {"index": index.main, "classify": classify.main}[command[0]]
    with pytest.raises(SystemExit) as exit_:
        main_of(command[1:] + ["--output", str(tmp_path), "--runs", "r1,.."])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "--runs" in err and "'..' is not a run id" in err, err


def test_the_pattern():
    for good in ("nightly", "2026-12-03", "run_1.b", "A-Z.09_", "x" * RUN_ID_MAX_LENGTH, "..."):
        assert is_run_id(good) and check_run_id(good) == good
    for bad in ("*", ".", "..", "a/b", "a\\b", "", None, 7, "a\nb", "x" * (RUN_ID_MAX_LENGTH + 1)):
        assert not is_run_id(bad)


def _root(where, s3_server, tmp_path) -> tuple[str, dict | None]:
    """An output root whose name holds every glob character fsspec expands."""
    name = f"out [x]*?{{a,b}}-{uuid.uuid4().hex[:6]}"
    if where == "local":
        return str(tmp_path / name), None
    return f"s3://{s3_server.bucket}/{name}", s3_server.storage_options()


def _write_attempt(output, run_id, options) -> Attempt:
    """An attempt folder as a finished job leaves it: one small Parquet file per table."""
    attempt = Attempt.new(output, run_id)
    fs, _ = store_fs(output, options)
    for table in TABLE_NAMES:
        path = f"{attempt.table_prefix(table)}-00000-of-00001.parquet"
        local = fs._strip_protocol(path)
        fs.makedirs(local.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(local, "wb") as f:
            pq.write_table(pa.table({"run_id": [run_id], "clip_id": [f"{attempt.attempt_id}-{table}"]}), f)
    stats = fs._strip_protocol(attempt.summary_stats_path)
    fs.makedirs(stats.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(stats, b"{}")
    return attempt


def store_fs(output, options):
    import fsspec
    return fsspec.core.url_to_fs(output, **(options or {}))


def _publish(attempt, options) -> dict:
    files = promote(attempt, options)
    manifest = {"run_id": attempt.run_id, "attempt": attempt.attempt_id, "files": files}
    write_manifest(attempt.output, attempt.run_id, manifest, options)
    return manifest


@pytest.mark.parametrize("where", ["local", "s3"])
def test_publication_retirement_and_listing_work_on_exact_paths(where, s3_server, tmp_path):
    output, options = _root(where, s3_server, tmp_path)
    fs, root = store_fs(output, options)
    first = _publish(_write_attempt(output, "nightly", options), options)
    other = _publish(_write_attempt(output, "other.run", options), options)
    assert finished_runs(output, options) == ["nightly", "other.run"]
    # A rerun of nightly: retirement removes the first attempt's files and folder, nothing else.
    second = _publish(_write_attempt(output, "nightly", options), options)
    removed = retire_other_attempts(output, "nightly", second, options)
    assert len(removed) == len(TABLE_NAMES) + 1, removed
    assert read_manifest(output, "nightly", options)["attempt"] == second["attempt"] != first["attempt"]
    on_store = sorted(f"{t}/{p}" for t in TABLE_NAMES for p in store.files_below(fs, f"{root.rstrip('/')}/{t}"))
    named = sorted(p for m in (second, other) for ps in m["files"].values() for p in ps)
    assert on_store == named
    assert sorted(published_table_files(output, "clips", options)) == sorted(
        fs.unstrip_protocol(f"{root}/{p}") if where == "s3" else f"{root}/{p}"
        for m in (second, other) for p in m["files"]["clips"])
    # The other run's files and folders are untouched; reconciling finds the root in line.
    report = reconcile(output, options, settle_seconds=0.2)
    assert not report.done and not report.failed and not report.skipped and not report.missing, report.render()
    assert store.children(fs, f"{root}/_runs/other.run").keys() == {"_MANIFEST.json", other["attempt"]}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_promote_moves_everything_back_when_removing_the_emptied_folders_fails(where, s3_server, tmp_path,
                                                                               monkeypatch):
    """Finding 4's last part: the emptied attempt folders are removed inside promote's rollback."""
    output, options = _root(where, s3_server, tmp_path)
    fs, root = store_fs(output, options)
    attempt = _write_attempt(output, "nightly", options)
    before = sorted(store.files_below(fs, fs._strip_protocol(attempt.root)))

    def refuse(*args, **kwargs):
        raise PermissionError("store refuses deletes (test double around a real store)")

    monkeypatch.setattr(store, "remove_tree", refuse)
    with pytest.raises(PermissionError):
        promote(attempt, options)
    assert sorted(store.files_below(fs, fs._strip_protocol(attempt.root))) == before
    assert all(not store.files_below(fs, f"{root}/{t}") for t in TABLE_NAMES)
