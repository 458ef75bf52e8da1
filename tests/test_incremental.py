"""--skip_labelled: a nightly run over an archive half labelled before scores only the new half."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint
from pipeline.main import run
from pipeline.runs.layout import Attempt, published_table_dir
from transforms.io.storage import Storage


def _write(folder, names):
    for i, name in enumerate(names):
        make = tone if i % 2 else noise
        write_audio(os.path.join(folder, name), make(1.5, 16000), 16000)


def test_only_new_or_changed_clips_are_scored(tmp_path, tiny_checkpoint):
    archive = tmp_path / "archive"
    archive.mkdir()
    first_half = [f"old_{i}.wav" for i in range(4)]
    _write(str(archive), first_half)
    out = str(tmp_path / "labels")
    base = ["--input", str(archive), "--model", tiny_checkpoint, "--output", out]
    night1 = run(base + ["--run_id", "night1"])
    assert night1.clips.num_rows == 4 and night1.skipped == 0
    assert all(v for v in night1.clips.column("source_version").to_pylist())

    new_half = [f"new_{i}.wav" for i in range(4)]
    _write(str(archive), new_half)
    # An old file rewritten with different content (and size) must be labelled again.
    write_audio(str(archive / "old_0.wav"), tone(2.5, 16000, 900.0), 16000)
    # A run that crashed (no _MANIFEST.json) before it published rows for the new files must not
    # make them count as labelled: its files claim them with their exact current versions, both
    # in its attempt folder and in the table folder (its launcher died while moving them there).
    storage = Storage()
    claimed = night1.clips.slice(0, 4).to_pylist()
    for row, name in zip(claimed, new_half):
        path = str(archive / name)
        row.update(clip_id=path, source_uri=path, source_version=storage.version(path))
    crashed = Attempt(out, "crashed", "20260101T000000Z-dead00")
    for folder in (crashed.table_dir("clips"), published_table_dir(out, "crashed", "clips")):
        os.makedirs(folder)
        pq.write_table(pa.Table.from_pylist(claimed, schema=night1.clips.schema),
                       os.path.join(folder, "part-20260101T000000Z-dead00-00000-of-00001.parquet"))

    night2 = run(base + ["--run_id", "night2", "--skip_labelled", out])
    scored = sorted(os.path.basename(u) for u in night2.clips.column("source_uri").to_pylist())
    assert scored == sorted(new_half + ["old_0.wav"])
    assert night2.skipped == 3
    assert night2.discovered == 8 == night2.clips.num_rows + night2.errors.num_rows + night2.skipped
    assert "clips skipped:     3" in night2.render()

    # Different weights: nothing counts as labelled.
    other = write_checkpoint(str(tmp_path / "other_model"), TinyASTSpec(), seed=1)
    night3 = run(["--input", str(archive), "--model", other, "--output", out, "--run_id", "night3",
                  "--skip_labelled", out])
    assert night3.skipped == 0 and night3.clips.num_rows == 8
    assert np.all(np.array(night3.clips.column("model_sha256").to_pylist()) != night1.clips.column("model_sha256")[0].as_py())


def _manifest(output, run_id):
    """The published manifest of ``run_id``, wherever the output layout keeps it (any JSON file
    under the output root naming the run and its counts)."""
    import json

    found = []
    for folder, _, files in os.walk(output):
        for name in files:
            if name.endswith(".json"):
                try:
                    with open(os.path.join(folder, name)) as f:
                        doc = json.load(f)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(doc, dict) and doc.get("run_id") == run_id and "counts" in doc:
                    found.append(doc)
    assert len(found) == 1, f"{run_id}: {len(found)} manifests"
    return found[0]


def _fingerprints(summary):
    return {t: set(getattr(summary, t).column("labelling_fingerprint").to_pylist())
            for t in ("clips", "segments", "errors")}


def test_a_change_of_any_labelling_setting_relabels_every_clip(tmp_path, tiny_checkpoint):
    """Changing --hop_seconds, the label map or the preprocessor's mean between two incremental
    runs relabels every clip (plain files and a tar shard, which is read again); an unchanged
    rerun skips them all (the shard unread). Every row carries the run's fingerprint."""
    import json
    import shutil

    from pipeline.demo.checkpoint import label_names
    from tests.shard_corpus import audio_bytes, make_tar

    archive = tmp_path / "archive"
    archive.mkdir()
    _write(str(archive), [f"clip_{i}.wav" for i in range(3)])
    (archive / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with open(archive / "shard.tar", "wb") as f:
        f.write(make_tar([(f"{i:03d}.wav", audio_bytes("wav", tone(0.8, 16000, 300.0 + 200 * i), 16000))
                          for i in range(2)]))
    out = str(tmp_path / "labels")
    base = ["--input", str(archive), "--output", out, "--skip_labelled", out]
    every = {"discovered": 6, "labelled": 5, "errored": 1, "skipped": 0,
             "errors_by_type": {"decode/AudioDecodeError": 1}}

    night1 = run(base + ["--model", tiny_checkpoint, "--run_id", "night1"])
    assert night1.counts() == every
    fingerprint = _manifest(out, "night1")["labelling_fingerprint"]
    assert len(fingerprint) == 64
    assert _fingerprints(night1) == {"clips": {fingerprint}, "segments": {fingerprint}, "errors": {fingerprint}}
    assert _manifest(out, "night1")["fingerprint_inputs"]["window"]["hop_samples"] == 1024 * 160

    unchanged = run(base + ["--model", tiny_checkpoint, "--run_id", "unchanged"])
    assert unchanged.counts() == {**every, "labelled": 0, "skipped": 5}
    assert (unchanged.shards_skipped, unchanged.shards_read) == (1, 0)
    assert _manifest(out, "unchanged")["labelling_fingerprint"] == fingerprint

    hop = run(base + ["--model", tiny_checkpoint, "--run_id", "hop", "--hop_seconds", "5"])
    assert hop.counts() == every and (hop.shards_skipped, hop.shards_read) == (0, 1)
    hop_fingerprint = _manifest(out, "hop")["labelling_fingerprint"]
    assert hop_fingerprint != fingerprint
    assert _fingerprints(hop) == {"clips": {hop_fingerprint}, "segments": {hop_fingerprint},
                                  "errors": {hop_fingerprint}}

    labels = label_names(12)
    label_map = tmp_path / "map.csv"
    label_map.write_text(f"source_label,target_label\n{labels[0]},animal\n{labels[1]},animal\n")
    mapped = run(base + ["--model", tiny_checkpoint, "--run_id", "mapped", "--label_map", str(label_map)])
    assert mapped.counts() == every and mapped.shards_skipped == 0
    assert {x["label"] for labels_ in mapped.clips.column("labels").to_pylist() for x in labels_} == {"animal"}

    # The same weights and config.json, only the preprocessor's mean edited.
    model = str(tmp_path / "mean_changed")
    shutil.copytree(tiny_checkpoint, model)
    with open(os.path.join(model, "preprocessor_config.json")) as f:
        preprocessor = json.load(f)
    preprocessor["mean"] += 1.0
    with open(os.path.join(model, "preprocessor_config.json"), "w") as f:
        json.dump(preprocessor, f)
    mean = run(base + ["--model", model, "--run_id", "mean"])
    assert mean.counts() == every and mean.shards_skipped == 0
    assert set(mean.clips.column("model_sha256").to_pylist()) == set(night1.clips.column("model_sha256").to_pylist())
    assert len({_manifest(out, r)["labelling_fingerprint"] for r in ("night1", "hop", "mapped", "mean")}) == 4


def test_a_source_without_etag_or_mtime_is_relabelled_every_run(tmp_path, tiny_checkpoint, caplog):
    """A real HTTP server (Python's http.server) answers without ETag, and fsspec's HTTP
    filesystem reports no modification time: its version is ``size:N;mtime:None``, which cannot
    tell a same-size rewrite, so --skip_labelled relabels it every run (and says so once), while
    a local file next to it is skipped."""
    import functools
    import http.server
    import logging
    import threading

    from transforms.io.incremental import UnversionedSources

    served = tmp_path / "served"
    served.mkdir()
    _write(str(served), ["remote.wav"])
    local = tmp_path / "local"
    local.mkdir()
    _write(str(local), ["local.wav"])
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        remote = f"http://127.0.0.1:{server.server_address[1]}/remote.wav"
        assert Storage().version(remote).endswith(";mtime:None")
        out = str(tmp_path / "labels")
        base = ["--input", remote, "--input", str(local), "--model", tiny_checkpoint, "--output", out,
                "--skip_labelled", out]
        night1 = run(base + ["--run_id", "night1"])
        assert night1.labelled == 2 and night1.skipped == 0
        UnversionedSources.reset()   # a new run in this same process (workers are fresh processes)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="transforms.io.incremental"):
            night2 = run(base + ["--run_id", "night2"])
        assert (night2.labelled, night2.skipped) == (1, 1)
        assert night2.clips.column("source_uri").to_pylist() == [remote]
        warned = [r.getMessage() for r in caplog.records if r.name == "transforms.io.incremental"]
        assert len(warned) == 1 and remote in warned[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        UnversionedSources.reset()
