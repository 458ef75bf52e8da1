"""The recovery rule, step by step, on output roots laid out as killed launchers leave them
(pipeline/runs/reconcile.py; small real Parquet files, no Beam job), and the command that applies it
by hand (``python -m pipeline.reconcile``), on a local disk and on SeaweedFS."""
import json
import os
import time
import uuid

import fsspec
import pytest

from pipeline.reconcile import main as reconcile_main
from pipeline.runs import store
from pipeline.runs.layout import TABLE_NAMES, Attempt, lease_path
from pipeline.runs.publish import promote, read_manifest, write_manifest
from pipeline.runs.reconcile import reconcile
from tests.test_run_ids import _write_attempt

DAY = 86400


def _root(where, s3_server, tmp_path):
    if where == "local":
        return str(tmp_path / "out"), None
    return f"s3://{s3_server.bucket}/reconcile-{uuid.uuid4().hex[:8]}", s3_server.storage_options()


def _table_files(fs, root):
    return sorted(f"{t}/{p}" for t in TABLE_NAMES for p in store.files_below(fs, f"{root}/{t}"))


def _move_first_file(attempt: Attempt, fs, root):
    """What a launcher killed after its first move leaves: one file in the clips table folder."""
    source = f"{fs._strip_protocol(attempt.table_dir('clips'))}"
    (name,) = store.children(fs, source)
    dest = f"{root}/clips/run_id={attempt.run_id}/{name}"
    store.move_file(fs, f"{source}/{name}", dest)
    return dest


@pytest.mark.parametrize("where", ["local", "s3"])
def test_reconcile_applies_the_rule(where, s3_server, tmp_path):
    output, options = _root(where, s3_server, tmp_path)
    fs, root = fsspec.core.url_to_fs(output, **(options or {}))
    root = root.rstrip("/")
    # "pub": attempt 1 published, then attempt 2 published with its retirement cut short
    # (attempt 1's files and folder remain), then attempt 3 killed after its first move.
    first = _write_attempt(output, "pub", options)
    write_manifest(output, "pub", {"run_id": "pub", "attempt": first.attempt_id,
                                   "files": promote(first, options)}, options)
    time.sleep(1.1)   # attempt ids carry the second they started
    second = _write_attempt(output, "pub", options)
    published = {"run_id": "pub", "attempt": second.attempt_id, "files": promote(second, options)}
    write_manifest(output, "pub", published, options)
    time.sleep(1.1)
    third = _write_attempt(output, "pub", options)
    stray = _move_first_file(third, fs, root)
    # "new": a first run killed after its first move (no manifest at all).
    new = _write_attempt(output, "new", options)
    _move_first_file(new, fs, root)
    # "busy": a launcher elsewhere holds its lease now, mid-move.
    busy = _write_attempt(output, "busy", options)
    busy_file = _move_first_file(busy, fs, root)
    fs.pipe_file(fs._strip_protocol(lease_path(output, "busy")),
                 json.dumps({"token": "t", "holder": busy.attempt_id, "host": "another-machine", "pid": 1,
                             "seconds": 300}).encode())

    planned = reconcile(output, options, dry_run=True, settle_seconds=0.2)
    assert set(planned.planned) == {"pub", "new", "busy"} and not planned.done
    assert store.file_info(fs, stray) is not None   # a dry run changes nothing

    report = reconcile(output, options, settle_seconds=0.2)
    assert set(report.done) == {"pub", "new"} and set(report.skipped) == {"busy"}, report.render()
    # In the table folders: pub's published files, and busy's file (its launcher is at work).
    named = sorted(p for ps in published["files"].values() for p in ps)
    assert _table_files(fs, root) == sorted(named + [busy_file[len(root) + 1:]])
    # The killed attempts' files are back in their folders; the superseded attempt is gone.
    attempts = set(store.children(fs, f"{root}/_runs/pub")) - {"_MANIFEST.json"}
    assert attempts == {second.attempt_id, third.attempt_id}
    for attempt in (third, new):
        assert len(store.children(fs, fs._strip_protocol(attempt.table_dir("clips")))) == 1
    assert read_manifest(output, "pub", options) == published
    assert reconcile(output, options, settle_seconds=0.2).done == {}   # in line now


def test_failed_attempts_are_removed_once_old_and_the_command_reports(tmp_path, capsys):
    output = str(tmp_path / "out")
    fs = fsspec.filesystem("file")
    old, recent = _write_attempt(output, "night", None), _write_attempt(output, "night", None)
    week_ago = time.time() - 8 * DAY
    for relative in store.files_below(fs, old.root):
        os.utime(f"{old.root}/{relative}", (week_ago, week_ago))
    assert reconcile_main(["--output", output, "--dry_run"]) == 0
    assert f"remove attempt {old.root}" in capsys.readouterr().out
    assert os.path.isdir(old.root)
    assert reconcile_main(["--output", output]) == 0
    assert not os.path.exists(old.root) and os.path.isdir(recent.root)
    assert reconcile_main(["--output", output, "--failed_attempt_days", "0"]) == 0
    assert not os.path.exists(recent.root)
    # A clock probe a killed process left in _runs/ itself, an hour old, goes too.
    probe = os.path.join(output, "_runs", "_CLOCK-0123456789ab")
    open(probe, "wb").close()
    os.utime(probe, (time.time() - 7200, time.time() - 7200))
    assert reconcile_main(["--output", output]) == 0
    assert capsys.readouterr().out.strip().endswith("nothing to reconcile")
    assert not os.path.exists(probe)


def test_the_command_exits_1_naming_run_ids_it_left_to_their_launcher(tmp_path, capsys):
    output = str(tmp_path / "out")
    fs = fsspec.filesystem("file")
    busy = _write_attempt(output, "busy", None)
    _move_first_file(busy, fs, output)
    with open(lease_path(output, "busy"), "w") as f:
        json.dump({"token": "t", "holder": busy.attempt_id, "host": "another-machine", "pid": 1, "seconds": 300}, f)
    assert reconcile_main(["--output", output]) == 1
    assert "skipped run busy" in capsys.readouterr().out


def _commit_clips(catalog, catalog_name, namespace, output, run_id, publish=True):
    """An attempt of ``run_id`` promoted into ``output`` and committed to the clips table of
    ``namespace`` as a launcher with --iceberg_catalog does (marker first; the embedded SQL
    catalog), then published (its manifest written) unless ``publish`` is False (a launcher
    killed between its Iceberg commits and its manifest). Returns it and its clips files' URIs."""
    import pyarrow as pa

    from pipeline.lakehouse.iceberg_commit import commit_run, ensure_table
    from pipeline.runs.publish import output_uris, write_json_document

    attempt = _write_attempt(output, run_id, None)
    files = promote(attempt, None)
    write_json_document(attempt.iceberg_marker_path, {"catalog": catalog_name, "namespace": namespace})
    table = ensure_table(catalog, namespace, "clips", pa.schema([("run_id", pa.string()), ("clip_id", pa.string())]))
    commit_run(table, run_id, output_uris(output, files["clips"]))
    if publish:
        write_manifest(output, run_id, {"run_id": run_id, "attempt": attempt.attempt_id, "files": files,
                                        "iceberg": {"catalog": catalog_name, "namespace": namespace,
                                                    "files": {"clips": files["clips"]}}}, None)
    return attempt, output_uris(output, files["clips"])


def test_reconciling_one_root_leaves_another_roots_runs_in_a_shared_catalog(tmp_path):
    """Two output roots publish into one catalog and namespace: reconciling root A (with the
    catalog) neither rolls back nor touches the run root B committed."""
    from pyiceberg.catalog import load_catalog

    from pipeline.lakehouse.iceberg_align import IcebergAlignment
    from pipeline.lakehouse.iceberg_commit import bare_path, embedded_catalog_properties, run_data_files

    out_a, out_b = str(tmp_path / "a"), str(tmp_path / "b")
    catalog = load_catalog("shared", **embedded_catalog_properties(out_a))
    _, a_files = _commit_clips(catalog, "shared", "labels", out_a, "from-a")
    _, b_files = _commit_clips(catalog, "shared", "labels", out_b, "from-b")

    report = reconcile(out_a, iceberg=IcebergAlignment(catalog, "labels", out_a), settle_seconds=0.2)
    assert report.done == {} and not report.failed, report.render()
    clips = catalog.load_table("labels.clips")
    for run_id, files in (("from-a", a_files), ("from-b", b_files)):
        assert sorted(bare_path(f.file_path) for f in run_data_files(clips, run_id)) == sorted(map(bare_path, files))
    assert not os.path.exists(os.path.join(out_a, "_runs", "from-b"))   # no lease taken for B's run in A
    assert reconcile(out_b, iceberg=IcebergAlignment(catalog, "labels", out_b), settle_seconds=0.2).done == {}
    assert len(run_data_files(catalog.load_table("labels.clips"), "from-a")) == len(a_files)


def test_a_reconcile_without_the_catalog_leaves_files_iceberg_may_point_at(tmp_path, capsys):
    """A launcher with a catalog killed between its Iceberg commits and its manifest: a
    reconciliation without --iceberg_catalog (the command, or a launch without it) leaves the
    attempt's files in the table folders, so the table still scans, and says it needs the
    catalog; one with the catalog rolls the table back and moves them, as ever."""
    from pipeline.lakehouse.iceberg_align import IcebergAlignment
    from pipeline.lakehouse.iceberg_commit import open_catalog

    output = str(tmp_path / "out")
    fs = fsspec.filesystem("file")
    catalog = open_catalog("lake", output)   # the embedded SQL catalog beside the tables
    published, _ = _commit_clips(catalog, "lake", "labels", output, "nightly")
    time.sleep(1.1)   # attempt ids carry the second they started
    killed, killed_files = _commit_clips(catalog, "lake", "labels", output, "nightly", publish=False)

    def scanned():
        return sorted(catalog.load_table("labels.clips").scan().to_arrow().column("clip_id").to_pylist())

    assert scanned() == [f"{killed.attempt_id}-clips"]
    before = _table_files(fs, output)
    assert reconcile_main(["--output", output]) == 1
    out = capsys.readouterr().out
    assert f"skipped run nightly: attempt {killed.attempt_id}" in out and "--iceberg_catalog lake" in out
    report = reconcile(output, settle_seconds=0.2)   # as a launch without the catalog reconciles
    assert "--iceberg_catalog lake" in report.skipped["nightly"] and not report.done, report.render()
    assert _table_files(fs, output) == before and all(os.path.exists(f) for f in killed_files)
    assert scanned() == [f"{killed.attempt_id}-clips"]   # still scans

    report = reconcile(output, iceberg=IcebergAlignment(catalog, "labels", output), settle_seconds=0.2)
    assert not report.skipped and not report.failed, report.render()
    assert "Iceberg: clips brought in line with the manifest" in report.done["nightly"]
    assert scanned() == [f"{published.attempt_id}-clips"]
    named = sorted(p for ps in read_manifest(output, "nightly")["files"].values() for p in ps)
    assert _table_files(fs, output) == named
    assert len(store.children(fs, killed.table_dir("clips"))) == 1   # moved back into its attempt
