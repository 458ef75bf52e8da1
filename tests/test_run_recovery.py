"""Publication survives kills and failures; the current labels stay right (issue 19, findings 2-4).

Real launcher processes (``run_pipeline.py``) are SIGKILLed at named steps of their publication
(pipeline/runs/killpoint.py: the process kills itself when it reaches the step named by
``AUDIO_LABELLING_KILL_AT``): (a) after its first file moved, (b) before its manifest, (c) during
the retirement of the earlier attempt, (d) between two Iceberg table commits. After each kill
the readers that go through the manifests (the documented current-labels query, evaluate's and
report's readers of an output root) still return the published rows only; then the next launch
into the root (another run id) reconciles it, after which no table folder holds a file that no
manifest names, every Iceberg table scans and holds exactly the manifests' files, and the current
labels (through the manifests, through Iceberg, and by globbing the folders) equal the published
state. On a local disk all four kills; on SeaweedFS (with a SQLite catalog whose warehouse is on
S3) the kill between two table commits, after a rerun whose segments commit was refused midway.
Also here: that refused commit on a local disk (finding 2), and two launchers of one run id
whose lease was taken over midway (finding 3).

Cost: each launch is a DirectRunner job over three short files with the tiny model; the killed
launchers are subprocesses (interpreter, MindSpore and Beam start-up each time), the "next
launches" run in this process over an empty folder (``--allow_empty``).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.lakehouse import iceberg_commit
from pipeline.lakehouse.iceberg_commit import open_catalog
from pipeline.lakehouse.iceberg_read import current_rows
from pipeline.main import run
from pipeline.runs import store
from pipeline.runs.killpoint import KILL_AT_ENV
from pipeline.runs.layout import TABLE_NAMES, run_meta_dir
from pipeline.runs.lease import LEASE_SECONDS_ENV
from pipeline.runs.publish import finished_runs, published_table_files, read_manifest
from pipeline.runs.table_files import read_optional_table, read_parquet_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CATALOG = "recovery"


def _current_labels_sql() -> str:
    """The query docs/lakehouse.md gives (the documentation is what is tested)."""
    with open(os.path.join(REPO, "docs", "lakehouse.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```sql\n(.*?)```", f.read(), flags=re.S)
    (query,) = [b for b in blocks if b.startswith("-- current labels")]
    return query


class Root:
    """An output root with its storage, its Iceberg catalog and launch arguments."""

    def __init__(self, where, tmp_path, s3_server, tiny_checkpoint):
        self.where = where
        self.audio = tmp_path / "audio"
        self.audio.mkdir()
        for i, seconds in enumerate((1.0, 1.5, 0.8)):
            write_audio(str(self.audio / f"c{i}.wav"), tone(seconds, 16000, 300.0 + 150 * i) + noise(seconds, 16000, i)
                        * 0.1, 16000)
        self.env = {}
        if where == "local":
            self.output, self.options = str(tmp_path / "out"), None
            extra = []
        else:
            self.output = f"s3://{s3_server.bucket}/recovery-{uuid.uuid4().hex[:8]}"
            self.options = s3_server.storage_options()
            self.env = {f"PYICEBERG_CATALOG__{CATALOG.upper()}__{k}": v for k, v in {
                "TYPE": "sql", "URI": f"sqlite:///{tmp_path}/catalog.db", "WAREHOUSE": f"{self.output}/_warehouse",
                "S3__ENDPOINT": s3_server.endpoint, "S3__ACCESS_KEY_ID": s3_server.access_key,
                "S3__SECRET_ACCESS_KEY": s3_server.secret_key, "S3__REGION": "us-east-1"}.items()}
            extra = ["--storage_options", json.dumps(self.options), *s3_server.beam_s3_args()]
        self.fs, self.root = fsspec.core.url_to_fs(self.output, **(self.options or {}))
        self.args = ["--input", str(self.audio), "--output", self.output, "--model", tiny_checkpoint,
                     "--batch_size", "2", "--iceberg_catalog", CATALOG, *extra]

    def launch(self, run_id: str) -> None:
        """A launch in this process, labelling the audio."""
        run(self.args + ["--run_id", run_id])

    def next_launch(self, run_id: str) -> None:
        """The next launch into the root after a kill: a real launch of another run id, which
        reconciles the root first; it finds no audio (an empty folder, --allow_empty), so it
        publishes an empty run and the current labels stay what the earlier runs made them."""
        empty = self.audio.parent / "nothing"
        empty.mkdir(exist_ok=True)
        args = list(self.args)
        args[args.index("--input") + 1] = str(empty)
        run(args + ["--run_id", run_id, "--allow_empty"])

    def killed_launch(self, run_id: str, step: str) -> subprocess.CompletedProcess:
        """A launcher process that kills itself at ``step``."""
        env = dict(os.environ, **self.env, PYTHONPATH=REPO, **{KILL_AT_ENV: step})
        done = subprocess.run([sys.executable, os.path.join(REPO, "run_pipeline.py"), *self.args,
                               "--run_id", run_id], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
        return done

    def catalog(self):
        return open_catalog(CATALOG, self.output)

    # --- what is published, by the manifests -------------------------------------------------
    def manifest_rows(self, table: str) -> pa.Table:
        files = [self.fs._strip_protocol(u) for u in published_table_files(self.output, table, self.options)]
        return pa.concat_tables([pq.read_table(f, filesystem=self.fs) for f in files], promote_options="default")

    def published_keys(self, table: str = "clips") -> list[tuple]:
        return sorted(zip(*(self.manifest_rows(table).column(c).to_pylist() for c in ("run_id", "clip_id"))))

    def expected_current(self) -> dict[str, tuple]:
        """clip_id -> (run_id, labelled_at) of the latest published row, computed here in Python."""
        best = {}
        for row in self.manifest_rows("clips").select(["clip_id", "run_id", "labelled_at"]).to_pylist():
            key = (row["labelled_at"], row["run_id"])
            if row["clip_id"] not in best or key > best[row["clip_id"]]:
                best[row["clip_id"]] = key
        return {c: (r, t) for c, (t, r) in best.items()}

    def current_by_query(self, view: str) -> dict[str, tuple]:
        """The documented current-labels query over a view of clips: through the manifests
        (docs/lakehouse.md's published_table_files) or by globbing the folders (at rest only)."""
        con = duckdb.connect()
        if view == "manifests":
            con.register("clips", self.manifest_rows("clips"))
        else:
            files = [f"{self.root}/clips/{p}" for p in store.files_below(self.fs, f"{self.root}/clips")]
            con.register("clips", pa.concat_tables([pq.read_table(f, filesystem=self.fs) for f in files],
                                                   promote_options="default"))
        rows = con.sql(_current_labels_sql()).arrow().read_all().to_pylist()
        return {r["clip_id"]: (r["run_id"], r["labelled_at"]) for r in rows}

    def table_files_no_manifest_names(self) -> list[str]:
        named = {self.fs._strip_protocol(u) for t in TABLE_NAMES
                 for u in published_table_files(self.output, t, self.options)}
        on_store = {f"{self.root}/{t}/{p}" for t in TABLE_NAMES for p in store.files_below(self.fs, f"{self.root}/{t}")}
        assert named <= on_store, f"manifests name missing files: {sorted(named - on_store)}"
        return sorted(on_store - named)

    def check_readers_see_published_rows_only(self) -> None:
        """Readers through the manifests are right at every moment, whatever lies in the folders."""
        expected = self.expected_current()
        assert self.current_by_query("manifests") == expected
        if self.where == "local":
            # evaluate's and report's readers of an output root (current labels)
            evaluated = read_parquet_path(self.output, "clips")
            reported = read_optional_table(self.output, "clips", ["clip_id", "run_id", "labelled_at"])
            for table in (evaluated, reported):
                assert {r["clip_id"]: (r["run_id"], r["labelled_at"]) for r in table.to_pylist()} == expected
            # report's page of an output root: the current labels' clips and run ids, no others
            from pipeline.report import build_report

            page = open(build_report(self.output, str(self.audio.parent / "report"))).read()
            runs = ", ".join(sorted({run_id for run_id, _ in expected.values()}))
            assert f"<td>clips labelled</td><td>{len(expected)}</td>" in page
            assert f"<td>run_id</td><td>{runs}</td>" in page

    def check_in_line(self) -> None:
        """The state every reconciliation leaves: no stray table file, every Iceberg table scans
        and holds the manifests' rows, and every reader's current labels are the published ones."""
        assert self.table_files_no_manifest_names() == []
        catalog = self.catalog()
        for table in TABLE_NAMES:
            scanned = catalog.load_table(f"audio_labelling.{table}").scan().to_arrow()   # raises if a file is gone
            if table == "clips":
                assert sorted(zip(scanned.column("run_id").to_pylist(), scanned.column("clip_id").to_pylist())) \
                    == self.published_keys()
                iceberg_current = current_rows(scanned)
                assert {r["clip_id"]: (r["run_id"], r["labelled_at"]) for r in iceberg_current.to_pylist()} \
                    == self.expected_current()
        self.check_readers_see_published_rows_only()
        assert self.current_by_query("glob") == self.expected_current()


# Where each kill happens, and which run id the killed launcher runs: a new one, or a rerun of
# the published run "base" (so readers must keep seeing base's earlier attempt).
KILLS = {"a": ("after-first-move", "new"), "b": ("before-manifest", "rerun"),
         "c": ("during-retirement", "rerun"), "d": ("between-iceberg-commits", "new")}


@pytest.mark.slow
@pytest.mark.parametrize("where,kills", [("local", "abcd"), ("s3", "d")])
def test_every_kill_is_repaired_by_the_next_launch(where, kills, tmp_path, s3_server, tiny_checkpoint, monkeypatch):
    root = Root(where, tmp_path, s3_server, tiny_checkpoint)
    for name, value in root.env.items():
        monkeypatch.setenv(name, value)
    root.launch("base")
    root.check_in_line()
    if where == "s3":
        _refuse_segments_commit_midway(root, "base", monkeypatch)   # finding 2 on SeaweedFS, same root
    for kill in kills:
        step, which = KILLS[kill]
        killed_run = "base" if which == "rerun" else f"killed-{kill}"
        published_before = root.published_keys()
        before_attempt = (read_manifest(root.output, killed_run, root.options) or {}).get("attempt")
        root.killed_launch(killed_run, step)
        manifest = read_manifest(root.output, killed_run, root.options)
        if step == "during-retirement":
            assert manifest["attempt"] != before_attempt   # published, earlier attempt partly retired
            assert root.table_files_no_manifest_names(), "the kill left none of the earlier attempt's files"
        else:
            assert (manifest or {}).get("attempt") == before_attempt   # nothing published
            assert root.published_keys() == published_before
            assert root.table_files_no_manifest_names(), "the kill left no stray file: the hook did not fire"
        # Before any repair: readers through the manifests return the published rows only.
        root.check_readers_see_published_rows_only()
        root.next_launch(f"next-{kill}")
        root.check_in_line()
        if step in ("after-first-move", "before-manifest", "between-iceberg-commits"):
            # The killed attempt's files are back in its own folder, for inspection.
            attempts = [a for a in store.children(root.fs, f"{root.root}/_runs/{killed_run}")
                        if not a.startswith("_") and a != before_attempt]
            assert len(attempts) == 1, attempts
            moved_back = store.files_below(root.fs, f"{root.root}/_runs/{killed_run}/{attempts[0]}/clips")
            assert moved_back and all(p.startswith(f"part-{attempts[0]}-") for p in moved_back)
        else:
            attempts = [a for a in store.children(root.fs, f"{root.root}/_runs/{killed_run}") if not a.startswith("_")]
            assert attempts == [manifest["attempt"]]   # the retirement was finished
    assert set(finished_runs(root.output, root.options)) >= {"base"} | {f"next-{k}" for k in kills}


def _refuse_segments_commit_midway(root: Root, run_id: str, monkeypatch) -> None:
    """Finding 2: a rerun of ``run_id`` whose segments commit is refused after clips committed.
    The clips commit must be rolled back to what the manifest names (the earlier attempt) before
    the files are moved back, so every table scans and agrees with the manifest."""
    published = root.published_keys()
    manifest = read_manifest(root.output, run_id, root.options)
    real_commit = iceberg_commit.commit_run

    def segments_refused(table, *args, **kwargs):
        if table.name()[-1] == "segments" and kwargs.get("action") is None:
            raise ConnectionError("catalog refused the segments commit (test double around the real commit)")
        return real_commit(table, *args, **kwargs)

    monkeypatch.setattr(iceberg_commit, "commit_run", segments_refused)
    with pytest.raises(ConnectionError, match="segments commit"):
        root.launch(run_id)
    monkeypatch.setattr(iceberg_commit, "commit_run", real_commit)
    assert read_manifest(root.output, run_id, root.options) == manifest
    assert root.published_keys() == published
    root.check_in_line()   # clips scans, and holds the earlier attempt's rows again


def test_a_failed_commit_midway_leaves_every_iceberg_table_readable(tmp_path, tiny_checkpoint, monkeypatch):
    """On a local disk (the embedded catalog): a rerun whose segments commit is refused midway
    (finding 2). On SeaweedFS the same step opens test_every_kill_is_repaired_by_the_next_launch[s3]."""
    root = Root("local", tmp_path, None, tiny_checkpoint)   # a local root needs no object store
    root.launch("nightly")
    _refuse_segments_commit_midway(root, "nightly", monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_launcher_that_lost_its_lease_publishes_nothing_and_deletes_nothing(where, tmp_path, s3_server,
                                                                              tiny_checkpoint, monkeypatch):
    """Finding 3: launcher A stalls (SIGSTOP at its last check before moving its files) past its
    lease; launcher B takes the run id over, and while B holds the lease with its files moved, A
    resumes. A must notice, move only its own files back, and exit 1; B publishes untouched."""
    import pipeline.main

    root = Root(where, tmp_path, s3_server, tiny_checkpoint)
    for name, value in root.env.items():
        monkeypatch.setenv(name, value)
    lease_seconds = 10
    env = dict(os.environ, PYTHONPATH=REPO, **{KILL_AT_ENV: "before-promote:stop",
                                              LEASE_SECONDS_ENV: str(lease_seconds)})
    a = subprocess.Popen([sys.executable, os.path.join(REPO, "run_pipeline.py"), *root.args, "--run_id", "shared"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, status = os.waitpid(a.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"launcher A ended instead of stalling: {a.communicate()[1][-3000:]}"
        time.sleep(lease_seconds + 1)   # A's lease expires: nobody renews it
        seen = {}
        real_promote = pipeline.main.promote

        def promote_then_resume_a(attempt, options):
            files = real_promote(attempt, options)
            seen["b_files"] = {f"{root.root}/{p}": root.fs.cat_file(f"{root.root}/{p}")
                               for ps in files.values() for p in ps}
            os.kill(a.pid, signal.SIGCONT)
            seen["a_out"], seen["a_err"] = a.communicate(timeout=300)
            return files

        monkeypatch.setattr(pipeline.main, "promote", promote_then_resume_a)
        root.launch("shared")
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
            a.wait()
    assert a.returncode == 1, seen.get("a_err", "")[-3000:]
    assert "lost its lease" in seen["a_err"]
    manifest = read_manifest(root.output, "shared", root.options)
    b_attempt = manifest["attempt"]
    # B's publication is whole: its manifest, and its files byte for byte, and nothing else.
    assert {f"{root.root}/{p}" for ps in manifest["files"].values() for p in ps} == set(seen["b_files"])
    for path, data in seen["b_files"].items():
        assert root.fs.cat_file(path) == data
    assert root.table_files_no_manifest_names() == []
    assert [a for a in store.children(root.fs, run_meta_dir(root.root, "shared")) if not a.startswith("_")] \
        == [b_attempt]
    root.check_in_line()
