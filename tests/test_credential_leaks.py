"""Credentials given to a run reach no log record, no _MANIFEST.json and no table.

A SeaweedFS server of its own requires a recognisable access key and secret. The job runs
against it with the credentials given once in ``--storage_options`` and once as Beam's
``--s3_access_key_id``/``--s3_secret_access_key`` (with two worker processes logging at DEBUG).
Everything the run left is searched for both strings: every log record at DEBUG from every
logger (caplog), everything written to the process's stdout/stderr, worker processes included
(capfd), the manifest, and every object under the output prefix, Parquet tables decoded.

(tests/test_object_storage.py checks the workers' INFO option dump and the tables for the
secret; this file adds DEBUG logging of every library, the access key id and the manifest.)
"""
import json
import logging
import os
import uuid

import pyarrow.parquet as pq
import pytest
import s3fs

from pipeline.demo.audio import tone
from pipeline.main import run
from pipeline.runs.layout import manifest_path
from tests.s3_server import SeaweedS3
from tests.shard_corpus import audio_bytes, make_tar
from transforms.io.storage import LOG_REDACTED, hide_in_logs, unhide_in_logs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMAT = logging.Formatter("%(name)s %(levelname)s %(message)s")


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory):
    canary = uuid.uuid4().hex[:10].upper()
    server = SeaweedS3(str(tmp_path_factory.mktemp("seaweedfs-creds")),
                       access_key=f"AKIDCANARY{canary}", secret_key=f"SeCrEtCaNaRy-{canary}-do-not-log")
    server.start()
    try:
        yield server
    finally:
        server.kill()   # its data is thrown away; no graceful stop needed


@pytest.fixture(scope="module")
def inputs(locked_server):
    fs = locked_server.filesystem()
    root = f"{locked_server.bucket}/creds-{uuid.uuid4().hex[:8]}"
    wav = audio_bytes("wav", tone(1.0, 16000, 440.0), 16000)
    for i in range(2):
        fs.pipe(f"{root}/in/shard-{i}.tar", make_tar([(f"{i}.wav", wav), (f"{i}-bad.wav", b"not audio")]))
    fs.pipe(f"{root}/in/loose.wav", wav)
    return f"s3://{root}"


def test_the_server_refuses_requests_without_the_right_credentials(locked_server, inputs):
    endpoint = {"client_kwargs": {"endpoint_url": locked_server.endpoint}}
    for client in (s3fs.S3FileSystem(anon=True, skip_instance_cache=True, **endpoint),
                   s3fs.S3FileSystem(key=locked_server.access_key, secret="wrong-secret-0000",
                                     skip_instance_cache=True, **endpoint)):
        with pytest.raises(PermissionError):
            client.ls(inputs.removeprefix("s3://") + "/in")


def test_hidden_values_leave_messages_arguments_and_tracebacks(caplog):
    secret = f"hidden-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("some.library")
    added = hide_in_logs({secret, "short"})
    try:
        log.debug("headers %s", {"Authorization": f"AWS4-HMAC-SHA256 Credential={secret}/x"})
        try:
            raise ValueError(f"refused {secret}")
        except ValueError:
            log.exception("request failed")
    finally:
        unhide_in_logs(added)
    log.debug("short is %s", "short")     # too short to hide without garbling other text
    text = caplog.text + "".join(FORMAT.format(r) for r in caplog.records)
    assert secret not in text
    assert f"Credential={LOG_REDACTED}/x" in text and f"refused {LOG_REDACTED}" in text
    assert added == {secret} and "short is short" in text


def _everything_logged(caplog, capfd) -> str:
    records = caplog.records
    parts = [FORMAT.format(r) for r in records] + [r.exc_text or "" for r in records]
    captured = capfd.readouterr()
    return "\n".join(parts + [caplog.text, captured.out, captured.err])


def _everything_stored(fs, output: str) -> str:
    parts = []
    for path in fs.find(output.removeprefix("s3://")):
        raw = fs.cat(path)
        parts.append(raw.decode("latin-1"))
        if path.endswith(".parquet"):
            with fs.open(path, "rb") as f:
                table = pq.read_table(f)
            parts.append(json.dumps(table.to_pylist(), default=str))
            parts.append(repr(table.schema.metadata))
    return "\n".join(parts)


@pytest.mark.parametrize("given", ["storage_options", "s3_flags"])
def test_credentials_reach_no_log_manifest_or_table(locked_server, inputs, tiny_checkpoint,
                                                    caplog, capfd, monkeypatch, given):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)   # only the command line carries them
    caplog.set_level(logging.DEBUG)               # the root logger: every logger without a level
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)   # and those that set their own
    key, secret = locked_server.access_key, locked_server.secret_key
    output = f"{inputs}/out-{given}"
    if given == "storage_options":
        credentials = ["--storage_options", json.dumps(locked_server.storage_options()),
                       f"--s3_endpoint_url={locked_server.endpoint}"]
    else:
        credentials = ["--storage_options",
                       json.dumps(locked_server.storage_options(with_credentials=False)),
                       *locked_server.beam_s3_args(), "--direct_num_workers", "2",
                       "--direct_running_mode", "multi_processing",
                       "--default_sdk_harness_log_level", "DEBUG"]
    summary = run(["--input", f"{inputs}/in/**", "--output", output, "--model", tiny_checkpoint,
                   "--batch_size", "2", "--run_id", "canary", "--max_error_fraction", "1.0", *credentials])
    assert summary.clips.num_rows == 3 and summary.errors.num_rows == 2

    logged = _everything_logged(caplog, capfd)
    # DEBUG really was captured: botocore's request lines, whose Authorization header names
    # the access key id, are there (with the key replaced).
    signed = [line for line in logged.splitlines() if "Credential=" in line]
    assert signed and all("Credential=<redacted>/" in line for line in signed), signed[:1]
    if given == "s3_flags":
        assert "Pipeline_options" in logged   # the worker processes' option dump, captured
    assert key not in logged and secret not in logged

    fs = locked_server.filesystem()
    manifest = fs.cat(manifest_path(output, "canary").removeprefix("s3://")).decode()
    assert json.loads(manifest)["storage_options"] == {
        "client_kwargs": {"endpoint_url": locked_server.endpoint}}
    assert key not in manifest and secret not in manifest
    stored = _everything_stored(fs, output)       # the manifest again, and every table file
    assert key not in stored and secret not in stored
