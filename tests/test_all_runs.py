"""Several runs under one output root, read as readers discover them (docs/lakehouse.md).

Three runs into one root: night1, a rerun of night1 (replacing it), then night2 with
--skip_labelled after the archive changed (two new files, one rewritten). Each reader's query over
all runs returns each published run's rows exactly once, and the documented current-labels query
(DuckDB and Spark SQL) returns one row per clip from the latest run that labelled it.
"""
import os
import re

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import run
from pipeline.runs.publish import finished_runs, published_table_files
from pipeline.runs.summary import read_table
from schemas.tables import TABLES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"clips": ("clip_id",), "segments": ("clip_id", "window_index"), "errors": ("source_uri",)}
READERS = ("pyarrow", "duckdb", "polars", "pandas", "spark")


def _write(folder: str, name: str, seconds: float, freq: float) -> None:
    write_audio(os.path.join(folder, name), tone(seconds, 16000, freq) + noise(seconds, 16000, int(freq)) * 0.1,
                16000)


@pytest.fixture(scope="module")
def archive_runs(tiny_checkpoint, tmp_path_factory):
    audio = str(tmp_path_factory.mktemp("archive"))
    for i, name in enumerate(("a.wav", "b.wav", "c.wav", "d.wav")):
        _write(audio, name, 1.0 + i * 0.5, 300.0 + 100 * i)
    with open(os.path.join(audio, "broken.wav"), "wb") as f:
        f.write(b"RIFF....WAVEfmt not audio")
    out = str(tmp_path_factory.mktemp("lake"))
    base = ["--input", audio, "--output", out, "--model", tiny_checkpoint, "--batch_size", "2",
            "--max_error_fraction", "1.0"]
    run(base + ["--run_id", "night1"])
    run(base + ["--run_id", "night1"])                       # a rerun: replaces night1
    _write(audio, "e.wav", 2.0, 900.0)
    _write(audio, "f.wav", 1.0, 1000.0)
    _write(audio, "a.wav", 3.0, 1100.0)                      # rewritten: labelled again
    night2 = run(base + ["--run_id", "night2", "--skip_labelled", out])
    assert night2.skipped == 3 and night2.labelled == 3
    return out


def _expected(out: str, table: str) -> list[tuple]:
    """(run_id, key...) of every row of every published run, as the manifests name them."""
    rows = []
    for run_id in finished_runs(out):
        for r in read_table(out, run_id, table).to_pylist():
            rows.append((run_id, *(r[k] for k in KEYS[table])))
    return sorted(rows)


def _read_all_runs(reader: str, out: str, table: str, spark=None):
    """The documented all-runs query of each reader; returns (column names, rows as dicts)."""
    folder = os.path.join(out, table)
    if reader == "pyarrow":
        t = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
        return t.column_names, t.to_pylist()
    if reader == "duckdb":
        rel = duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*/*.parquet', hive_partitioning = true)")
        return rel.columns, rel.arrow().read_all().to_pylist()
    if reader == "polars":
        df = pl.scan_parquet(f"{folder}/*/*.parquet", hive_partitioning=True).collect()
        return df.columns, df.to_dicts()
    if reader == "pandas":
        df = pd.read_parquet(folder, partitioning=None)
        return list(df.columns), df.to_dict("records")
    if reader == "spark":
        df = spark.read.parquet(folder)
        return df.columns, [r.asDict() for r in df.collect()]
    raise ValueError(reader)


@pytest.mark.parametrize("table", list(TABLES))
@pytest.mark.parametrize("reader", READERS)
def test_every_reader_returns_each_runs_rows_once(archive_runs, reader, table, request):
    out = archive_runs
    assert finished_runs(out) == ["night1", "night2"]
    spark = request.getfixturevalue("spark") if reader == "spark" else None
    columns, rows = _read_all_runs(reader, out, table, spark)
    # The table's own columns, nothing else: no errors rows under the clips schema, no stray files.
    assert sorted(columns) == sorted(TABLES[table].names)
    got = sorted((r["run_id"], *(r[k] for k in KEYS[table])) for r in rows)
    expected = _expected(out, table)
    assert got == expected
    counts = {run_id: sum(1 for r in expected if r[0] == run_id) for run_id in ("night1", "night2")}
    # night1 (rerun, counted once): 4 clips + 1 error; night2: a, e, f relabelled + the broken file.
    assert {"clips": {"night1": 4, "night2": 3}, "errors": {"night1": 1, "night2": 1}}.get(
        table, counts) == counts


def _current_labels_sql() -> str:
    """The query docs/lakehouse.md gives, so the documentation is what is tested."""
    with open(os.path.join(REPO, "docs", "lakehouse.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if b.startswith("-- current labels")]
    assert len(found) == 1, "docs/lakehouse.md must hold one current-labels query"
    return found[0]


def _check_current(out: str, rows: list[dict]) -> None:
    by_clip = {}
    for r in rows:
        assert r["clip_id"] not in by_clip, f"{r['clip_id']} twice"
        by_clip[r["clip_id"]] = r["run_id"]
    names = {os.path.basename(c): run_id for c, run_id in by_clip.items()}
    # a (rewritten), e and f were last labelled by night2; b, c and d by night1's rerun.
    assert names == {"a.wav": "night2", "e.wav": "night2", "f.wav": "night2",
                     "b.wav": "night1", "c.wav": "night1", "d.wav": "night1"}
    # The row is the latest run's own: night2's version of the rewritten file.
    night2 = {r["clip_id"]: r for r in read_table(out, "night2", "clips").to_pylist()}
    a = next(r for r in rows if os.path.basename(r["clip_id"]) == "a.wav")
    assert a["source_version"] == night2[a["clip_id"]]["source_version"]
    assert a["labels"] and a["duration_seconds"] == pytest.approx(3.0)


def test_current_labels_in_duckdb(archive_runs):
    # The documented view: the files the manifests name (right at every moment).
    files = published_table_files(archive_runs, "clips")
    con = duckdb.connect()
    con.sql(f"CREATE VIEW clips AS SELECT * FROM read_parquet({files!r})")
    _check_current(archive_runs, con.sql(_current_labels_sql()).arrow().read_all().to_pylist())
    # At rest (no launcher publishing, nothing left by a killed one), the glob view agrees.
    con.sql(f"CREATE OR REPLACE VIEW clips AS SELECT * FROM read_parquet('{archive_runs}/clips/*/*.parquet', "
            "hive_partitioning = true)")
    _check_current(archive_runs, con.sql(_current_labels_sql()).arrow().read_all().to_pylist())


def test_current_labels_in_spark_sql(archive_runs, spark):
    spark.read.parquet(*published_table_files(archive_runs, "clips")).createOrReplaceTempView("clips")
    rows = [r.asDict(recursive=True) for r in spark.sql(_current_labels_sql()).collect()]
    _check_current(archive_runs, rows)
