"""Every table of runs with no options, with --emit_scores and with --emit_embeddings reads in
Spark (pyspark, local mode), DuckDB, Polars, pandas and pyarrow with the same values: each
reader's rows are compared, value by value, with pyarrow's read of the same files."""
import datetime
import math
import os

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.main import run
from pipeline.runs.layout import published_table_dir

RUNS = {"plain": [], "scores": ["--emit_scores"], "embeddings": ["--emit_embeddings"]}
TABLES = ("clips", "segments", "errors")
SORT_KEYS = {"clips": ("clip_id",), "segments": ("clip_id", "window_index"), "errors": ("source_uri",)}


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, tmp_path_factory):
    audio = tmp_path_factory.mktemp("reader_audio")
    write_audio(str(audio / "tone.wav"), tone(1.0, 16000, 440.0), 16000)
    write_audio(str(audio / "long.flac"), noise(12.0, 22050, 2), 22050)     # two windows
    (audio / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    out = tmp_path_factory.mktemp("reader_out")
    for run_id, extra in RUNS.items():
        run(["--input", str(audio), "--output", str(out), "--model", tiny_checkpoint, "--run_id", run_id,
             "--batch_size", "2", "--max_error_fraction", "1.0", *extra])
    return str(out)


def _normal(value):
    """One value as plain Python, whatever the reader returned."""
    if hasattr(value, "asDict"):                       # a Spark Row (a struct)
        value = value.asDict(recursive=True)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime.datetime):            # instants, whatever zone the reader attached
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.astimezone(datetime.timezone.utc)
    if value is pd.NaT or (value is not None and not isinstance(value, (str, bytes, bool, int))
                           and pd.isna(value)):
        return None
    return value


def _rows(records: list[dict], table: str) -> list[dict]:
    rows = [{k: _normal(v) for k, v in r.items()} for r in records]
    return sorted(rows, key=lambda r: tuple(str(r[k]) for k in SORT_KEYS[table]))


def _folder(out: str, run_id: str, table: str) -> str:
    return published_table_dir(out, run_id, table)


def _read(reader: str, folder: str, spark_session=None) -> list[dict]:
    pattern = os.path.join(folder, "*.parquet")
    if reader == "pyarrow":
        return pq.read_table(folder).to_pylist()
    if reader == "duckdb":
        return duckdb.sql(f"SELECT * FROM read_parquet('{pattern}')").arrow().read_all().to_pylist()
    if reader == "polars":
        return pl.read_parquet(pattern).to_dicts()
    if reader == "pandas":
        return pd.read_parquet(folder).to_dict("records")
    if reader == "spark":
        return [r.asDict(recursive=True) for r in spark_session.read.parquet(folder).collect()]
    raise ValueError(reader)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("run_id", list(RUNS))
@pytest.mark.parametrize("reader", ["spark", "duckdb", "polars", "pandas"])
def test_every_reader_reads_the_same_values(runs, run_id, table, reader, request):
    folder = _folder(runs, run_id, table)
    expected = _rows(_read("pyarrow", folder), table)
    assert expected, f"{run_id}/{table} is empty: nothing to compare"
    spark_session = request.getfixturevalue("spark") if reader == "spark" else None
    got = _rows(_read(reader, folder, spark_session), table)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        assert set(mine) == set(theirs), f"{reader} columns differ"
        assert mine == theirs


def test_optional_columns_are_filled_only_when_asked(runs):
    for run_id, want in (("plain", set()), ("scores", {"scores"}), ("embeddings", {"embedding"})):
        for table in ("clips", "segments"):
            read = pq.read_table(_folder(runs, run_id, table))
            filled = {c for c in ("scores", "embedding") if read.column(c).null_count < read.num_rows}
            assert filled == want, (run_id, table)
