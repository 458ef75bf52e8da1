"""The examples in docs/usage.md run against a crafted run directory and give the expected answers."""
import datetime
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.tables import CLIPS_SCHEMA, ERRORS_SCHEMA
from transforms.scoring.labels import load_class_thresholds, load_label_map

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "usage.md")
WHEN = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def blocks(language: str) -> list[str]:
    text = open(DOC, encoding="utf-8").read()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def clip(uri, labels):
    return {"clip_id": uri, "source_uri": uri, "duration_seconds": 3600.0, "original_sample_rate": 16000,
            "channels": 1, "labels": [{"label": n, "index": i, "score": s} for n, i, s in labels],
            "activation": "sigmoid", "model_id": "m", "model_sha256": "f" * 64, "run_id": "RUN_ID",
            "labelled_at": WHEN}


@pytest.fixture
def run_root(tmp_path):
    root = tmp_path / "out"
    clips = [clip("/a/1.wav", [("Dog", 1, 0.9), ("Speech", 0, 0.3)]),
             clip("/a/2.wav", [("Speech", 0, 0.8), ("Dog", 1, 0.6)]),
             clip("/a/3.wav", [("Speech", 0, 0.7)]),
             clip("/a/4.wav", [])]
    errors = [{"source_uri": "/a/bad.wav", "clip_id": "/a/bad.wav", "stage": "decode",
               "error_type": "AudioDecodeError", "message": "no", "run_id": "RUN_ID", "recorded_at": WHEN}]
    for name, rows, schema in (("clips", clips, CLIPS_SCHEMA), ("errors", errors, ERRORS_SCHEMA)):
        (root / name / "run_id=RUN_ID").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / name / "run_id=RUN_ID" / "part-0.parquet")
    return str(root)


def test_duckdb_queries(run_root):
    duckdb = pytest.importorskip("duckdb")
    queries = blocks("sql")
    assert len(queries) == 5
    results = [duckdb.sql(q.replace("'out/", f"'{run_root}/")).fetchall() for q in queries]
    top, dogs, any_of, errors, runs = results
    assert top == [("Speech", 2, 0.75), ("Dog", 1, 0.9)]
    assert [(r[0], r[1], round(r[2], 6), r[3]) for r in dogs] == [("/a/1.wav", "Dog", 0.9, 1), ("/a/2.wav", "Dog", 0.6, 1)]
    assert sorted(r[0] for r in any_of) == ["/a/1.wav", "/a/2.wav", "/a/3.wav"]
    assert errors == [("decode", "AudioDecodeError", 1, "/a/bad.wav")]
    assert runs == [("RUN_ID", "f" * 64, 4, 4.0)]


def test_pandas_example(run_root, capsys):
    (code,) = blocks("python")[:1]
    namespace = {}
    exec(code.replace('"out/', f'"{run_root}/'), namespace)
    clips, dogs = namespace["clips"], namespace["dogs"]
    assert clips["top_label"].tolist()[:3] == ["Dog", "Speech", "Speech"]
    assert clips["top_label"].isna().tolist() == [False, False, False, True]
    assert dogs["source_uri"].tolist() == ["/a/1.wav", "/a/2.wav"]
    assert dogs["score"].tolist() == pytest.approx([0.9, 0.6])
    assert "decode" in capsys.readouterr().out


def test_csv_examples_load(tmp_path):
    examples = blocks("csv")
    assert len(examples) == 2
    thresholds, label_map = (tmp_path / "t.csv", tmp_path / "m.csv")
    thresholds.write_text(examples[0])
    label_map.write_text(examples[1])
    got = load_class_thresholds(str(thresholds), ["Speech", "Male speech, man speaking", "Dog", "Cat"])
    assert got[:3].tolist() == [0.6, 0.4, 0.25]
    m = load_label_map(str(label_map))
    assert m.targets == ["dog", "cat", "rain"] and m.sources_of("dog") == ["Dog", "Bow-wow"]
