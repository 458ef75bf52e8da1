"""pipeline.report and pipeline.evaluate read the Iceberg tables: one run's rows, or the archive's
current labels (the latest row per clip over all runs). Two real runs (tiny AST, DirectRunner) into
one local output root, committed to the embedded SQLite catalog (--iceberg_catalog with a name no
configuration knows); the second run relabels part of the archive and labels a file whose first
version failed."""
import datetime
import json
import os
import re

import pyarrow as pa
import pytest

from pipeline.demo.audio import noise, tone, write_audio
from pipeline.evaluate import EvaluationError, evaluate, load_truth
from pipeline.evaluate import main as evaluate_main
from pipeline.lakehouse.iceberg_commit import DEFAULT_NAMESPACE
from pipeline.lakehouse.iceberg_read import (IcebergReadError, current_errors, current_rows, open_catalog_for_reading,
                                   read_iceberg_table)
from pipeline.main import run
from pipeline.runs.layout import run_meta_dir
from pipeline.report import build_report
from pipeline.report import main as report_main

CATALOG = "toolstest"   # no .pyiceberg.yaml or PYICEBERG_CATALOG__TOOLSTEST__* names it


@pytest.fixture(scope="module")
def archive(tiny_checkpoint, tmp_path_factory):
    """r1 labels a, b, c and fails on late.wav and broken.wav; late.wav is then rewritten as real
    audio and r2 runs over a, late and broken only."""
    assert not any(k.startswith(f"PYICEBERG_CATALOG__{CATALOG.upper()}__") for k in os.environ)
    work = tmp_path_factory.mktemp("iceberg_tools")
    audio = work / "audio"
    audio.mkdir()
    write_audio(str(audio / "a.wav"), tone(1.0, 16000, 440.0), 16000)
    write_audio(str(audio / "b.flac"), noise(2.0, 22050, 1), 22050)
    write_audio(str(audio / "c.wav"), tone(1.5, 16000, 880.0), 16000)
    (audio / "late.wav").write_bytes(b"RIFF not yet")
    (audio / "broken.wav").write_bytes(b"RIFF never")
    output = str(work / "labels")
    base = ["--output", output, "--model", tiny_checkpoint, "--batch_size", "2", "--max_error_fraction", "1.0",
            "--iceberg_catalog", CATALOG]
    r1 = run([*base, "--input", str(audio), "--run_id", "r1"])
    write_audio(str(audio / "late.wav"), tone(1.2, 16000, 660.0), 16000)
    r2 = run([*base, "--run_id", "r2", *(a for name in ("a.wav", "late.wav", "broken.wav")
                                         for a in ("--input", str(audio / name)))])
    return {"output": output, "audio": audio, "work": work, "summaries": {"r1": r1, "r2": r2},
            "catalog": open_catalog_for_reading(CATALOG, output), "checkpoint": tiny_checkpoint}


def _by_name(table: pa.Table, column: str = "clip_id") -> dict[str, dict]:
    return {os.path.basename(row[column]): row for row in table.to_pylist()}


def _run_folder(output: str, run_id: str) -> str:
    """The folder `report --run` takes: <output>/_runs/<run_id>."""
    return run_meta_dir(output, run_id)


# --- the reading function -----------------------------------------------------------------------------------
def test_current_labels_are_the_latest_row_per_clip(archive):
    catalog = archive["catalog"]
    every = read_iceberg_table(catalog, DEFAULT_NAMESPACE, "clips", columns=["clip_id", "run_id"], all_runs=True)
    assert sorted(os.path.basename(c) for c in every.column("clip_id").to_pylist()) == [
        "a.wav", "a.wav", "b.flac", "c.wav", "late.wav"]
    current = read_iceberg_table(catalog, DEFAULT_NAMESPACE, "clips")
    assert current.num_rows == len(set(current.column("clip_id").to_pylist())) == 4
    rows = _by_name(current)
    assert {name: row["run_id"] for name, row in rows.items()} == {
        "a.wav": "r2", "b.flac": "r1", "c.wav": "r1", "late.wav": "r2"}
    # Each current row is that run's row, all columns.
    for run_id in ("r1", "r2"):
        committed = _by_name(archive["summaries"][run_id].clips)
        for name, row in rows.items():
            if row["run_id"] == run_id:
                assert row == committed[name]
    # One run: its partition only.
    r2 = read_iceberg_table(catalog, DEFAULT_NAMESPACE, "clips", run_id="r2", columns=["clip_id", "run_id"])
    assert sorted(os.path.basename(c) for c in r2.column("clip_id").to_pylist()) == ["a.wav", "late.wav"]
    assert set(r2.column("run_id").to_pylist()) == {"r2"}
    with pytest.raises(IcebergReadError, match="never committed.*r1, r2"):
        read_iceberg_table(catalog, DEFAULT_NAMESPACE, "clips", run_id="r3")


def test_current_errors_drop_inputs_labelled_later(archive):
    catalog = archive["catalog"]
    errors = read_iceberg_table(catalog, DEFAULT_NAMESPACE, "errors")
    assert sorted((os.path.basename(r["source_uri"]), r["run_id"]) for r in errors.to_pylist()) == [
        ("broken.wav", "r1"), ("broken.wav", "r2"), ("late.wav", "r1")]
    current = current_errors(errors, read_iceberg_table(catalog, DEFAULT_NAMESPACE, "clips"))
    # late.wav was labelled by r2; broken.wav failed twice and counts once, as of r2.
    assert [(os.path.basename(r["source_uri"]), r["run_id"]) for r in current.to_pylist()] == [("broken.wav", "r2")]


def test_current_rows_order_and_ties():
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    later = t0 + datetime.timedelta(seconds=1)
    table = pa.table({"clip_id": ["x", "y", "x", "x", "y"], "labelled_at": [t0, t0, later, later, t0],
                      "run_id": ["n1", "n1", "n2", "n0", "n3"], "value": [1, 2, 3, 4, 5]})
    got = current_rows(table).to_pylist()
    # x: n2 and n0 tie on the latest time, the greater run id wins; y: a tie at t0, n3 wins.
    assert [(r["clip_id"], r["run_id"], r["value"]) for r in got] == [("x", "n2", 3), ("y", "n3", 5)]
    assert current_rows(table.slice(0, 0)).num_rows == 0


# --- report ---------------------------------------------------------------------------------------------------
def _summary_cells(page: str) -> dict[str, str]:
    summary = page.split("<h2>Summary</h2>", 1)[1].split("</table>", 1)[0]
    return dict(re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", summary))


def _rows_after(page: str, chart: str) -> list[tuple]:
    """The table printed under a chart (label frequency, errors)."""
    part = page.split(f"<h2 id='{chart}'>", 1)[1].split("<h2", 1)[0]
    return re.findall(r"<tr>((?:<td>[^<]*</td>)+)</tr>", part)


@pytest.mark.parametrize("run_id", ["r1", "r2"])
def test_report_of_a_run_from_iceberg_equals_the_run_folder(archive, run_id, tmp_path):
    out = tmp_path / "iceberg"
    assert report_main(["--iceberg_catalog", CATALOG, "--output", archive["output"], "--run_id", run_id,
                        "--out", str(out)]) == 0
    page = (out / "index.html").read_text(encoding="utf-8")
    folder_page = open(build_report(_run_folder(archive["output"], run_id), str(tmp_path / "folder")),
                       encoding="utf-8").read()
    counts = archive["summaries"][run_id].counts()
    cells, folder_cells = _summary_cells(page), _summary_cells(folder_page)
    for key in ("clips labelled", "inputs not labelled (errors)", "run_id", "activation", "audio labelled",
                "labels per clip"):
        assert cells[key] == folder_cells[key], key
    assert int(cells["clips labelled"]) == counts["labelled"]
    assert int(cells["inputs not labelled (errors)"]) == counts["errored"]
    assert f"labelled {counts['labelled']}" in cells["run counts (snapshot summary)"]
    for chart in ("label_frequency", "errors"):
        assert _rows_after(page, chart) == _rows_after(folder_page, chart)
    assert (out / "label_frequency.png").read_bytes() == (tmp_path / "folder" / "label_frequency.png").read_bytes()
    assert "Labelling run " + run_id in page
    assert "the Iceberg tables record each run&#x27;s counts, not its timings" in page
    assert not (out / "throughput.png").exists()


def test_report_of_the_current_labels(archive, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)       # the default --out is ./report_current
    assert report_main(["--iceberg_catalog", CATALOG, "--output", archive["output"]]) == 0
    page = (tmp_path / "report_current" / "index.html").read_text(encoding="utf-8")
    cells = _summary_cells(page)
    assert cells["clips labelled"] == "4"
    assert cells["inputs not labelled (errors)"] == "1"          # broken.wav, once
    assert cells["run_id"] == "r1, r2"
    assert cells["runs committed"] == "2: r1, r2"
    assert "Current labels of audio_labelling" in page


def test_source_flags_are_checked(archive, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        report_main(["--run", "x", "--iceberg_catalog", CATALOG])
    assert e.value.code == 2 and "not allowed with argument --run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report_main([])
    assert "one of the arguments --run --iceberg_catalog is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report_main(["--run", "x", "--run_id", "r1"])
    assert "--run_id: only with --iceberg_catalog" in capsys.readouterr().err
    assert report_main(["--iceberg_catalog", CATALOG]) == 2
    assert "--iceberg_output ROOT" in capsys.readouterr().err
    # An output root no run committed to: an error, and no catalog is created there.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report_main(["--iceberg_catalog", CATALOG, "--output", str(empty)]) == 2
    assert "has no embedded catalog" in capsys.readouterr().err and not (empty / "_iceberg").exists()
    assert report_main(["--iceberg_catalog", CATALOG, "--output", archive["output"], "--run_id", "nope",
                        "--out", str(tmp_path / "o")]) == 2
    assert "run 'nope' was never committed" in capsys.readouterr().err
    assert report_main(["--iceberg_catalog", CATALOG, "--output", archive["output"],
                        "--iceberg_namespace", "elsewhere", "--out", str(tmp_path / "o")]) == 2
    assert "no Iceberg table elsewhere.clips" in capsys.readouterr().err
    truth = tmp_path / "t.csv"
    truth.write_text("filename,category\na.wav,x\n")
    with pytest.raises(SystemExit):
        evaluate_main(["--predictions", "p", "--iceberg_catalog", CATALOG, "--truth", str(truth)])
    assert "not allowed with argument --predictions" in capsys.readouterr().err


# --- evaluate -------------------------------------------------------------------------------------------------
def _truth(archive, tmp_path) -> str:
    """A ground truth over every file; the classes are the tiny model's, chosen so that some are right."""
    with open(os.path.join(archive["checkpoint"], "config.json")) as f:
        names = [v for _, v in sorted(json.load(f)["id2label"].items(), key=lambda kv: int(kv[0]))]
    current = _by_name(read_iceberg_table(archive["catalog"], DEFAULT_NAMESPACE, "clips"))
    lines = ["filename,category"]
    for i, name in enumerate(["a.wav", "b.flac", "c.wav", "late.wav", "broken.wav"]):
        row = current.get(name)
        lines.append(f"{name},{row['labels'][0]['label'] if row and i % 2 == 0 else names[i]}")
    path = tmp_path / "truth.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _evaluate_cli(args: list[str], tmp_path, name: str) -> dict:
    out = tmp_path / f"{name}.json"
    assert evaluate_main([*args, "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    report.pop("inputs")
    return report


@pytest.mark.parametrize("run_id", ["r1", "r2"])
def test_evaluate_a_run_from_iceberg_equals_its_clips(archive, run_id, tmp_path):
    truth = _truth(archive, tmp_path)
    from_iceberg = _evaluate_cli(["--iceberg_catalog", CATALOG, "--iceberg_output", archive["output"],
                                  "--run_id", run_id, "--truth", truth], tmp_path, "iceberg")
    expected = evaluate(archive["summaries"][run_id].clips, load_truth(truth))
    assert from_iceberg == json.loads(json.dumps(expected))
    assert from_iceberg["matched"] == {"r1": 3, "r2": 2}[run_id]


def test_evaluate_the_current_labels(archive, tmp_path):
    truth = _truth(archive, tmp_path)
    from_iceberg = _evaluate_cli(["--iceberg_catalog", CATALOG, "--iceberg_output", archive["output"],
                                  "--truth", truth], tmp_path, "current")
    # By hand: r2's rows, and r1's rows of the clips r2 did not label again.
    r1, r2 = (archive["summaries"][r].clips for r in ("r1", "r2"))
    relabelled = set(r2.column("clip_id").to_pylist())
    kept = r1.filter(pa.array([c not in relabelled for c in r1.column("clip_id").to_pylist()]))
    expected = evaluate(pa.concat_tables([r2, kept]), load_truth(truth))
    assert from_iceberg == json.loads(json.dumps(expected))
    assert from_iceberg["matched"] == 4
    assert from_iceberg["missing_predictions"]["files"] == ["broken.wav"]
    # Every run's rows together match a.wav twice: the current view is what makes this work.
    with pytest.raises(EvaluationError, match="two clips rows match"):
        evaluate(pa.concat_tables([r1, r2]), load_truth(truth))


def test_documented_sql_gives_the_current_labels(archive):
    import duckdb

    text = open(os.path.join(os.path.dirname(__file__), os.pardir, "docs", "lakehouse.md"), encoding="utf-8").read()
    query = re.findall(r"```sql\n(.*?)```", text.split("## The current labels", 1)[1], flags=re.S)[0]
    every_run = read_iceberg_table(archive["catalog"], DEFAULT_NAMESPACE, "clips", all_runs=True)
    connection = duckdb.connect()
    connection.register("clips", every_run)      # the relation the query names
    from_sql = connection.sql(query).arrow()
    from_sql = from_sql.read_all() if hasattr(from_sql, "read_all") else from_sql
    expected = read_iceberg_table(archive["catalog"], DEFAULT_NAMESPACE, "clips")
    assert from_sql.num_rows == expected.num_rows == 4
    key = ["clip_id", "run_id", "labelled_at"]
    assert sorted(zip(*(from_sql.column(c).to_pylist() for c in key))) == \
        sorted(zip(*(expected.column(c).to_pylist() for c in key)))
    assert _by_name(from_sql)["a.wav"]["labels"] == _by_name(expected)["a.wav"]["labels"]


def test_a_configured_catalog_needs_no_output(archive, tmp_path, monkeypatch):
    """The catalog as pyiceberg users configure one (here: the runs' SQLite file, by variables;
    pyiceberg's SQL catalog keeps tables per catalog name, so the name stays)."""
    from pipeline.lakehouse.iceberg_commit import embedded_catalog_properties

    for key, value in embedded_catalog_properties(archive["output"]).items():
        monkeypatch.setenv(f"PYICEBERG_CATALOG__{CATALOG.upper()}__{key.upper()}", value)
    out = tmp_path / "r"
    assert report_main(["--iceberg_catalog", CATALOG, "--run_id", "r2", "--out", str(out)]) == 0
    assert _summary_cells((out / "index.html").read_text(encoding="utf-8"))["clips labelled"] == "2"
