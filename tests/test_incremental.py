"""--skip_labelled: a nightly run over an archive half labelled before scores only the new half."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.demo_audio import noise, tone, write_audio
from pipeline.demo_checkpoint import TinyASTSpec, write_checkpoint
from pipeline.main import run
from pipeline.run_layout import Attempt, published_table_dir
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
