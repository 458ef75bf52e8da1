"""The table sink on a worker that was given no pipeline options (as Beam's external worker pool
starts them): it registers its own S3 settings and writes to a real S3 server (SeaweedFS), the
credentials coming from the worker's environment only."""
import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.internal import pickler   # Beam's own pickler: how workers receive a sink
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options
from apache_beam.options.value_provider import RuntimeValueProvider

from schemas.tables import ERRORS_SCHEMA
from transforms.write_tables import WriteTable, filesystem_settings


def test_settings_carry_no_credentials():
    options = PipelineOptions(["--s3_endpoint_url=http://s3.example", "--s3_disable_ssl",
                               "--s3_access_key_id=AKIAEXAMPLE", "--s3_secret_access_key=s3cr3t",
                               "--s3_region_name=eu-west-1"])
    assert filesystem_settings(options) == {"s3_endpoint_url": "http://s3.example",
                                            "s3_region_name": "eu-west-1", "s3_disable_ssl": True}


def test_a_worker_with_pipeline_options_keeps_them(monkeypatch):
    registered = PipelineOptions(["--s3_endpoint_url=http://registered"])
    monkeypatch.setattr(FileSystems, "_pipeline_options", registered)
    sink = WriteTable("s3://b/t/part", ERRORS_SCHEMA, {"s3_endpoint_url": "http://carried"})._sink
    sink._ready()
    assert FileSystems._pipeline_options is registered


def test_sink_writes_to_s3_on_a_worker_without_pipeline_options(s3_server, monkeypatch):
    # What a pool's worker has: no options registered (an in-process DirectRunner run earlier in
    # this test process leaves runtime options behind).
    monkeypatch.setattr(FileSystems, "_pipeline_options", None)
    monkeypatch.setattr(RuntimeValueProvider, "runtime_options", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)   # the endpoint comes with the sink
    prefix = f"s3://{s3_server.bucket}/sink-test/errors/part"
    # Beam's own sink on such a worker: the failure seen on the portable runner.
    plain = pickler.loads(pickler.dumps(
        beam.io.WriteToParquet(prefix, ERRORS_SCHEMA, file_name_suffix=".parquet")._sink))
    with pytest.raises(ValueError, match="Must provide one of client or options"):
        plain.open_writer(plain.initialize_write(), "bundle-0")
    monkeypatch.setattr(FileSystems, "_pipeline_options", None)
    beam_write = WriteTable(prefix, ERRORS_SCHEMA,
                            {"s3_endpoint_url": s3_server.endpoint, "s3_disable_ssl": True},
                            file_name_suffix=".parquet")
    sink = pickler.loads(pickler.dumps(beam_write._sink))   # as a worker gets it
    init = sink.initialize_write()
    writer = sink.open_writer(init, "bundle-1")
    row = {"source_uri": "s3://x/a.wav", "clip_id": "s3://x/a.wav", "shard_uri": None,
           "member_name": None, "stage": "decode", "error_type": "ValueError", "message": "m",
           "run_id": "r", "recorded_at": None}
    writer.write(pa.Table.from_pylist([row], schema=ERRORS_SCHEMA))
    written = writer.close()
    pre = sink.pre_finalize(init, [written])
    final = list(sink.finalize_write(init, [written], pre))
    assert len(final) == 1 and final[0].startswith(prefix)
    assert FileSystems._pipeline_options.view_as(S3Options).s3_endpoint_url == s3_server.endpoint
    with s3_server.filesystem().open(final[0].removeprefix("s3://"), "rb") as f:
        assert pq.read_table(f).column("clip_id").to_pylist() == ["s3://x/a.wav"]


def test_text_writes_carry_settings_too(s3_server, monkeypatch):
    """Beam's text sink (used for small files of a run) through the same wrapper."""
    from transforms.write_tables import carrying_filesystem_settings

    monkeypatch.setattr(FileSystems, "_pipeline_options", None)
    monkeypatch.setattr(RuntimeValueProvider, "runtime_options", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    path = f"s3://{s3_server.bucket}/sink-test/stats.json"
    write = carrying_filesystem_settings(
        beam.io.WriteToText(path, num_shards=1, shard_name_template=""),
        {"s3_endpoint_url": s3_server.endpoint, "s3_disable_ssl": True})
    sink = pickler.loads(pickler.dumps(write._sink))
    init = sink.initialize_write()
    writer = sink.open_writer(init, "bundle-1")
    writer.write("{}")
    written = writer.close()
    assert list(sink.finalize_write(init, [written], sink.pre_finalize(init, [written]))) == [path]
    assert s3_server.filesystem().cat(path.removeprefix("s3://")) == b"{}\n"
