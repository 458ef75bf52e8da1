"""pipeline.report on crafted run directories: the HTML embeds real charts and the PNGs lie beside it."""
import base64
import datetime
import json
import os
import re

import matplotlib.image
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.report import build_report, main
from pipeline.runs.timings import read_run_timings
from schemas.tables import CLIPS_SCHEMA, ERRORS_SCHEMA

START = datetime.datetime(2024, 5, 1, 10, 0, 0, tzinfo=datetime.timezone.utc)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABEL_COUNTS = {"Speech": 30, "Dog": 12, "Music": 7, "Rain": 1}
# A clips table as written before windowing existed (schema version 1): no num_windows column.
CLIPS_WITHOUT_WINDOWS = CLIPS_SCHEMA.remove(CLIPS_SCHEMA.get_field_index("num_windows"))


def clips_rows(run_id="r1"):
    rng = np.random.default_rng(0)
    rows, i = [], 0
    for label, n in LABEL_COUNTS.items():
        for _ in range(n):
            score = float(rng.uniform(0.3, 1.0))
            rows.append({
                "clip_id": f"/a/{i}.wav", "source_uri": f"/a/{i}.wav", "duration_seconds": 10.0,
                "original_sample_rate": 44100, "channels": 2,
                "labels": [{"label": label, "index": 0, "score": score},
                           {"label": "Other", "index": 1, "score": score / 2}],
                "activation": "sigmoid", "model_id": "ast-test", "model_sha256": "ab" * 32, "run_id": run_id,
                "labelled_at": START + datetime.timedelta(seconds=5 + 0.5 * i)})
            i += 1
    return rows


def error_rows(run_id="r1"):
    kinds = [("decode", "AudioDecodeError")] * 3 + [("features", "WaveformTooShortError")] * 2 + \
            [("read", "FileNotFoundError")]
    return [{"source_uri": f"/a/bad{i}.wav", "clip_id": None, "stage": s, "error_type": t,
             "message": f"<broken> file {i}", "run_id": run_id, "recorded_at": START} for i, (s, t) in enumerate(kinds)]


def write_run(root, run_id, clips, errors, clips_schema=CLIPS_WITHOUT_WINDOWS):
    run = os.path.join(root, run_id)
    for name, rows, schema in (("clips", clips, clips_schema), ("errors", errors, ERRORS_SCHEMA)):
        os.makedirs(os.path.join(run, name))
        half = len(rows) // 2
        for part, chunk in enumerate((rows[:half], rows[half:])):
            pq.write_table(pa.Table.from_pylist(chunk, schema=schema),
                           os.path.join(run, name, f"part-{part:05d}-of-00002.parquet"))
    return run


def check_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5000, (path, len(data))
    pixels = matplotlib.image.imread(path)
    distinct = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(distinct) > 20, (path, len(distinct))
    return data


def test_full_report_with_timings(tmp_path):
    run = write_run(str(tmp_path), "r1", clips_rows(), error_rows())
    # The manifest as pipeline/runs/publish.py + main.build_manifest write it (the parts read here).
    manifest = {"run_id": "r1", "counts": {"discovered": 56, "labelled": 50, "errored": 6},
                "timings": {"started": START.isoformat(), "finished": (START + datetime.timedelta(seconds=40)).isoformat(),
                            "seconds": 40.0, "clips_per_second": 1.25,
                            "stages": {"inspect_model": 2.0, "pipeline": 35.0, "read_back": 3.0}},
                "tables": {"clips": 50, "errors": 6}}
    with open(os.path.join(run, "_MANIFEST.json"), "w") as f:
        json.dump(manifest, f)
    out = str(tmp_path / "report")
    page = open(build_report(run, out), encoding="utf-8").read()

    embedded = dict(re.findall(r"<h2 id='(\w+)'>[^<]*</h2>\s*<p><img alt='[^']*' src='data:image/png;base64,([A-Za-z0-9+/=]+)'",
                               page))
    assert set(embedded) == {"label_frequency", "top1_scores", "errors", "throughput"}
    for name, data in embedded.items():
        assert f"href='{name}.png'" in page
        on_disk = check_png(os.path.join(out, f"{name}.png"))
        assert base64.b64decode(data) == on_disk   # the page embeds exactly the file beside it
    # The skipped chart says why and leaves no file.
    assert "no num_windows column" in page
    assert not os.path.exists(os.path.join(out, "windows_per_clip.png"))
    # The tables under the charts carry the crafted counts, escaped.
    assert "<td>Speech</td><td>30</td><td>60.0%</td>" in page
    assert "<td>decode</td><td>AudioDecodeError</td><td>3</td>" in page
    assert "&lt;broken&gt; file" in page and "<broken>" not in page
    # 50 clips of 10 s in 40 s.
    assert "1.25 clips/s over 40.0 s" in page
    assert "12.5 s of audio per second" in page
    assert "may not have finished" not in page


def test_windows_chart_and_notes_for_missing_parts(tmp_path):
    schema = CLIPS_SCHEMA
    rows = clips_rows("r2")
    for i, row in enumerate(rows):
        row["num_windows"] = 1 + i % 7
    run = write_run(str(tmp_path), "r2", rows, [], clips_schema=schema)
    out = str(tmp_path / "out")
    assert main(["--run", run, "--out", out]) == 0
    page = open(os.path.join(out, "index.html"), encoding="utf-8").read()
    check_png(os.path.join(out, "windows_per_clip.png"))
    assert "data:image/png;base64," in page and "href='windows_per_clip.png'" in page
    assert "no errors in this run" in page and not os.path.exists(os.path.join(out, "errors.png"))
    assert "skipped: no timing file" in page and not os.path.exists(os.path.join(out, "throughput.png"))
    assert "no _MANIFEST.json: the run may not have finished" in page


def test_windows_counted_from_a_windows_table(tmp_path):
    run = write_run(str(tmp_path), "r3", clips_rows("r3"), error_rows("r3"))
    os.makedirs(os.path.join(run, "windows"))
    ids = [f"/a/{i}.wav" for i in range(50) for _ in range(1 + i % 3)]
    pq.write_table(pa.table({"clip_id": ids, "window_index": list(range(len(ids)))}),
                   os.path.join(run, "windows", "part-0.parquet"))
    out = str(tmp_path / "out")
    page = open(build_report(run, out), encoding="utf-8").read()
    check_png(os.path.join(out, "windows_per_clip.png"))
    assert "rows per clip_id of the windows table" in page


def test_default_out_and_bad_run_dir(tmp_path, capsys):
    run = write_run(str(tmp_path), "r4", clips_rows("r4"), error_rows("r4"))
    assert main(["--run", run]) == 0
    assert os.path.isfile(os.path.join(run, "report", "index.html"))
    assert main(["--run", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert main(["--run", str(tmp_path)]) == 2          # the output root, not a run directory
    assert "<output>/_runs/<run_id>" in capsys.readouterr().err


@pytest.mark.parametrize("name, record, wall, stages, clips", [
    ("_MANIFEST.json", {"timings": {"started": "2024-05-01T10:00:00+00:00", "finished": "2024-05-01T10:01:30+00:00",
                                    "seconds": 90.0, "clips_per_second": 2.0}, "counts": {"labelled": 180}},
     90.0, {}, 180),
    ("_MANIFEST.json", {"timings": {"started": "2024-05-01T10:00:00Z", "finished": "2024-05-01T10:01:30Z"}},
     90.0, {}, None),
    ("_RUN_SUMMARY.json", {"wall_seconds": 12.5, "stages": {"decode": 4.0, "infer": 8.0}, "clips_labelled": 7},
     12.5, {"decode": 4.0, "infer": 8.0}, 7),
])
def test_read_run_timings_layouts(tmp_path, name, record, wall, stages, clips):
    (tmp_path / name).write_text(json.dumps(record))
    got = read_run_timings(str(tmp_path))
    assert (got["file"], got["wall_seconds"], got["stages"], got["clips"]) == (name, wall, stages, clips)


def test_read_run_timings_ignores_files_without_times(tmp_path):
    (tmp_path / "_MANIFEST.json").write_text('{"run_id": "x", "counts": {"labelled": 3}}')
    assert read_run_timings(str(tmp_path)) is None


@pytest.mark.parametrize("top", [1, 2, 39, 40, 41, 79, 80, 81, 117, 118, 119, 120, 400, 1001])
def test_every_window_count_falls_in_a_bin(top):
    from pipeline.report import window_bins

    values = np.arange(1, top + 1)
    bins = window_bins(top)
    counts, _ = np.histogram(values, bins=bins)
    assert counts.sum() == values.size and len(bins) - 1 <= 41
    assert np.all(np.abs(bins - np.round(bins)) == 0.5)      # edges between whole numbers


def incremental_manifest():
    """As main.build_manifest writes it for a --skip_labelled run that found 29 inputs."""
    return {"run_id": "r4", "inputs": ["s3://archive/audio/**"], "input_manifests": [],
            "storage_options": {"client_kwargs": {"endpoint_url": "http://127.0.0.1:8333"}},
            "counts": {"discovered": 29, "labelled": 50, "errored": 6, "skipped": 22},
            "figures": {"audio_seconds": 500.0, "clips_without_labels": 3, "windows_scored": 120,
                        "shards_skipped": 2},
            "model": {"uri": "hf://MIT/ast@" + "c" * 40, "model_id": "MIT/ast", "weights_sha256": "ab" * 32,
                      "num_labels": 527, "backend": "native", "device": "auto", "precision": "fp32",
                      "hub": {"repo_id": "MIT/ast", "revision": "main", "commit": "c" * 40}},
            "settings": {"top_k": 5, "threshold": 0.5, "skip_labelled": "s3://archive-labels", "emit_scores": False,
                         "label_map": None, "batch_size": 8},
            "labelling_fingerprint": "f" * 64,
            "timings": {"started": START.isoformat(), "seconds": 40.0,
                        "stages": {"prepare": 2.0, "job": 35.0, "accounting": 1.0, "publish": 2.0}}}


def test_the_report_shows_the_runs_counts_options_and_inputs(tmp_path):
    clips = clips_rows("r4")
    for row in clips[:3]:
        row["labels"] = []
    # labelled_at as most runners stamp rows: all in the job's last moment.
    for i, row in enumerate(clips):
        row["labelled_at"] = START + datetime.timedelta(seconds=36, microseconds=800 * i)
    run = write_run(str(tmp_path), "r4", clips, error_rows("r4"))
    with open(os.path.join(run, "_MANIFEST.json"), "w") as f:
        json.dump(incremental_manifest(), f)
    out = str(tmp_path / "out")
    page = open(build_report(run, out), encoding="utf-8").read()
    summary_table = page.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    assert "<th>" not in summary_table                          # no empty header row
    for row in ("inputs discovered</td><td>29", "clips labelled</td><td>50",
                "inputs not labelled (errors)</td><td>6",
                "clips skipped (labelled the same way by an earlier run)</td><td>22 (2 whole tar shard(s) not read)",
                "clips that kept no label</td><td>3 of 50 (no label passed --threshold 0.5)",
                "throughput</td><td>1.25 clips/s over 40.0 s; 12.5 s of audio per second; 3.00 windows/s"):
        assert f"<td>{row}</td>" in summary_table, row
    options = page.split("<h2 id='options'>Options and inputs</h2>", 1)[1].split("</table>", 1)[0]
    for row in ("--input</td><td>s3://archive/audio/**",
                f"--model</td><td>MIT/ast (revision main, commit {'c' * 40})",
                "--skip_labelled</td><td>s3://archive-labels", "--threshold</td><td>0.5",
                "labelling fingerprint</td><td>" + "f" * 64):
        assert f"<td>{row}</td>" in options, row
    assert "--emit_scores" not in options and "--label_map" not in options   # off / unset
    # Throughput: the launcher's stages on the run's timeline, not labelled_at.
    check_png(os.path.join(out, "throughput.png"))
    assert "stages by the launcher&#x27;s clock" in page and "labelled_at" not in page


def test_the_longest_clip_is_drawn(tmp_path):
    rows = clips_rows("r5")
    for i, row in enumerate(rows):
        row["num_windows"] = 118 if i == 0 else 1 + i % 5
    run = write_run(str(tmp_path), "r5", rows, [], clips_schema=CLIPS_SCHEMA)
    out = str(tmp_path / "out")
    page = open(build_report(run, out), encoding="utf-8").read()
    assert "Counted from the clips table&#x27;s num_windows column" in page
    check_png(os.path.join(out, "windows_per_clip.png"))
    from pipeline.report import window_bins

    counts, _ = np.histogram([r["num_windows"] for r in rows], bins=window_bins(118))
    assert counts.sum() == len(rows) and counts[-1] == 1
