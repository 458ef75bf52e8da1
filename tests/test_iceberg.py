"""--iceberg_catalog: each finished run is committed to Iceberg tables in one snapshot per table,
a rerun replaces its run's rows, and pyiceberg and Polars read the same rows as the Parquet folders.
The catalog is pyiceberg's SQL catalog on a SQLite file, configured the way pyiceberg users do
(PYICEBERG_CATALOG__<NAME>__* variables), with its warehouse and the run's tables on a real S3 server
(SeaweedFS)."""
import json
import os
import uuid

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.lakehouse.iceberg_commit import RUN_ID_PROPERTY, open_catalog
from pipeline.main import main, run
from pipeline.runs.layout import published_table_dir

TABLES = ("clips", "segments", "errors")


def _parquet_rows(fs, output: str, run_id: str, table: str) -> pa.Table:
    files = sorted(fs.glob(f"{published_table_dir(output, run_id, table).removeprefix('s3://')}/*.parquet"))
    return pa.concat_tables(pq.read_table(f, filesystem=fs) for f in files)


def _polars_s3(server) -> dict:
    return {"aws_endpoint_url": server.endpoint, "aws_access_key_id": server.access_key,
            "aws_secret_access_key": server.secret_key, "aws_region": "us-east-1", "aws_allow_http": "true"}


def _key(table: pa.Table, name: str) -> list[tuple]:
    columns = ["run_id", "clip_id" if name != "errors" else "source_uri"]
    if name == "segments":
        columns.append("window_index")
    return sorted(zip(*(table.column(c).to_pylist() for c in columns)))


@pytest.fixture(scope="module")
def lake(s3_server, tiny_checkpoint, tmp_path_factory):
    """Runs r1, r2, a rerun of r1 (over changed inputs), an incremental r3 (--skip_labelled, one
    new file) and a failed r4 (its error budget) into one S3 output root."""
    name = "lake"
    work = tmp_path_factory.mktemp("iceberg")
    output = f"s3://{s3_server.bucket}/lake-{uuid.uuid4().hex[:8]}"
    env = {f"PYICEBERG_CATALOG__{name.upper()}__{k}": v for k, v in {
        "TYPE": "sql", "URI": f"sqlite:///{work}/catalog.db", "WAREHOUSE": f"{output}/_warehouse",
        "S3__ENDPOINT": s3_server.endpoint, "S3__ACCESS_KEY_ID": s3_server.access_key,
        "S3__SECRET_ACCESS_KEY": s3_server.secret_key, "S3__REGION": "us-east-1"}.items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    audio = {k: work / k for k in ("one", "two")}
    for folder in audio.values():
        folder.mkdir()
    write_audio(str(audio["one"] / "a.wav"), tone(1.0, 16000, 440.0), 16000)
    write_audio(str(audio["one"] / "b.flac"), noise(2.0, 22050, 1), 22050)
    (audio["one"] / "broken.wav").write_bytes(b"RIFF not really")
    write_audio(str(audio["two"] / "c.wav"), tone(1.5, 16000, 880.0), 16000)
    fs = s3_server.filesystem()
    for folder in audio.values():
        for path in folder.iterdir():
            fs.pipe(f"{output.removeprefix('s3://')}-in/{folder.name}/{path.name}", path.read_bytes())
    base = ["--output", output, "--model", tiny_checkpoint, "--batch_size", "2", "--emit_scores",
            "--max_error_fraction", "1.0", "--iceberg_catalog", name, "--storage_options", json.dumps(s3_server.storage_options()),
            *s3_server.beam_s3_args()]
    inputs = {k: f"{output}-in/{k}/" for k in audio}
    try:
        summaries = [run([*base, "--input", inputs["one"], "--run_id", "r1"]),
                     run([*base, "--input", inputs["two"], "--run_id", "r2"])]
        # r1 again over both folders: the rerun replaces r1's rows.
        summaries.append(run([*base, "--input", inputs["one"], "--input", inputs["two"], "--run_id", "r1"]))
        # A new file: the incremental r3 labels only it (and the broken file errors again).
        write_audio(str(audio["two"] / "d.wav"), tone(2.0, 16000, 660.0), 16000)
        fs.pipe(f"{output.removeprefix('s3://')}-in/two/d.wav", (audio["two"] / "d.wav").read_bytes())
        summaries.append(run([*base, "--input", inputs["one"], "--input", inputs["two"], "--run_id", "r3",
                              "--skip_labelled", output]))
        assert (summaries[-1].labelled, summaries[-1].skipped, summaries[-1].errored) == (1, 3, 1), \
            summaries[-1].errors.to_pylist()
        # r4 fails: one input in three is broken, over a budget of none.
        strict = list(base)
        strict[strict.index("--max_error_fraction") + 1] = "0.0"
        assert main([*strict, "--input", inputs["one"], "--run_id", "r4"]) == 1
        yield {"server": s3_server, "catalog": open_catalog(name, output), "output": output, "fs": fs, "summaries": summaries,
               "name": name, "base": base, "inputs": inputs}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_one_snapshot_per_run_with_run_id_and_counts(lake):
    for name in TABLES:
        table = lake["catalog"].load_table(f"audio_labelling.{name}")
        snapshots = table.snapshots()
        # One per successful run; the failed r4 added none.
        assert [s.summary[RUN_ID_PROPERTY] for s in snapshots] == ["r1", "r2", "r1", "r3"]
        rerun = snapshots[2].summary
        counts = lake["summaries"][2].counts()
        assert int(rerun["audio-labelling.discovered"]) == counts["discovered"] == 4
        assert int(rerun["audio-labelling.labelled"]) == counts["labelled"] == 3
        assert int(snapshots[3].summary["audio-labelling.skipped"]) == 3


def test_iceberg_rows_equal_the_parquet_folders(lake):
    for name in TABLES:
        table = lake["catalog"].load_table(f"audio_labelling.{name}")
        from_iceberg = table.scan().to_arrow()
        from_polars = pl.scan_iceberg(table, storage_options=_polars_s3(lake["server"])).collect().to_arrow()
        expected = pa.concat_tables(_parquet_rows(lake["fs"], lake["output"], r, name) for r in ("r1", "r2", "r3"))
        assert _key(from_iceberg, name) == _key(expected, name) == _key(from_polars, name)
        if name == "clips":
            # values too, not only keys: the scores the pipeline wrote
            by_id = {r["clip_id"]: r["scores"] for r in expected.to_pylist()}
            for row in from_iceberg.to_pylist():
                assert row["scores"] == pytest.approx(by_id[row["clip_id"]])


def test_rerun_replaced_its_rows(lake):
    clips = lake["catalog"].load_table("audio_labelling.clips").scan().to_arrow()
    per_run = {}
    for run_id, clip_id in zip(clips.column("run_id").to_pylist(), clips.column("clip_id").to_pylist()):
        per_run.setdefault(run_id, []).append(os.path.basename(clip_id))
    # r1's first attempt labelled a and b; its rerun a, b and c. No row of the first attempt is left.
    assert sorted(per_run["r1"]) == ["a.wav", "b.flac", "c.wav"]
    assert sorted(per_run["r2"]) == ["c.wav"]
    assert sorted(per_run["r3"]) == ["d.wav"]
    assert "r4" not in per_run


def test_a_failed_run_leaves_no_file_in_the_table_folders(lake):
    for name in TABLES:
        assert not lake["fs"].glob(f"{published_table_dir(lake['output'], 'r4', name).removeprefix('s3://')}/*")


def test_catalog_that_cannot_be_opened_fails_at_launch(lake, capsys):
    args = list(lake["base"])
    args[args.index("--iceberg_catalog") + 1] = "not_configured_anywhere"
    code = main([*args, "--input", lake["inputs"]["two"], "--run_id", "never"])
    assert code == 2
    assert "PYICEBERG_CATALOG__NOT_CONFIGURED_ANYWHERE__URI" in capsys.readouterr().err
