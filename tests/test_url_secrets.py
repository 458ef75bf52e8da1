"""Presigned-URL signatures and tokens never reach clip ids, rows, the manifest, messages or logs."""
import json
import logging
import uuid

import pytest

from pipeline.demo.audio import tone
from pipeline.main import run
from pipeline.runs.layout import manifest_path
from tests.shard_corpus import audio_bytes, json_bytes, make_tar
from transforms.io.url_secrets import scrub_text, scrub_url


@pytest.mark.parametrize("url, expected", [
    ("https://h:9/b/a.wav?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20261130%2Fus&X-Amz-Date=1"
     "&X-Amz-Expires=60&X-Amz-SignedHeaders=host&x-amz-security-token=T&X-Amz-Signature=abc&v=2",
     "https://h:9/b/a.wav?v=2"),
    ("https://a.blob.core.windows.net/c/a.wav?sv=2020-08-04&se=2026&sr=b&sp=r&sig=XY%3D",
     "https://a.blob.core.windows.net/c/a.wav?sv=2020-08-04&se=2026&sr=b&sp=r"),
    ("https://h/a.wav?AWSAccessKeyId=AK&Expires=9&Signature=s", "https://h/a.wav?Expires=9"),
    ("https://h/a.wav?TOKEN=1&apiKey=2&Key-Pair-Id=3&Policy=4&X-Goog-Credential=5&access_token=6&lang=en",
     "https://h/a.wav?lang=en"),
    ("HTTP://h/s.tar?token=1#dir/m.wav", "HTTP://h/s.tar#dir/m.wav"),
    ("https://h/a.wav", "https://h/a.wav"),
    ("https://h/a.wav?x=1&y", "https://h/a.wav?x=1&y"),
    ("s3://bucket/what?token.wav", "s3://bucket/what?token.wav"),      # not a query outside http(s)
    ("/data/a?sig=1.wav", "/data/a?sig=1.wav"),
    # User-info is a credential in any scheme, user name and all (issue 19, finding 9).
    ("https://alice:PASSW0RD@host/a.wav", "https://host/a.wav"),
    ("https://ghp_TOKEN@host:8443/s.tar?sig=1&v=2#m@1.wav", "https://host:8443/s.tar?v=2#m@1.wav"),
    ("sftp://bob:pw%40x@host/a.wav", "sftp://host/a.wav"),
    ("simplecache::https://u:p@h/a.wav", "simplecache::https://h/a.wav"),
    ("s3://bucket/me@home.wav", "s3://bucket/me@home.wav"),         # an @ in a key, not user-info
    ("/data/me@home.wav", "/data/me@home.wav"),
])
def test_scrub_url(url, expected):
    assert scrub_url(url) == expected
    assert scrub_url(expected) == expected


def test_scrub_text_finds_user_info_in_messages():
    message = "ClientResponseError 404 for https://alice:PASSW0RD@h/a.wav (retrying sftp://u:p@h/b)"
    assert scrub_text(message) == "ClientResponseError 404 for https://h/a.wav (retrying sftp://h/b)"


def test_scrub_text_finds_urls_in_messages():
    message = "404, message='Not Found', url=URL('https://h/a.wav?X-Amz-Signature=deadbeef&part=2')"
    assert scrub_text(message) == "404, message='Not Found', url=URL('https://h/a.wav?part=2')"
    assert scrub_url(None) is None


@pytest.fixture(scope="module")
def presigned(s3_server, tmp_path_factory):
    """A WAV, a shard and a corrupt file on SeaweedFS, listed by presigned GET URLs (plus a
    harmless response-content-type parameter that must be kept)."""
    import boto3
    from botocore.config import Config

    fs = s3_server.filesystem()
    prefix = f"presigned-{uuid.uuid4().hex[:8]}"
    objects = {
        "a.wav": audio_bytes("wav", tone(1.0, 16000, 440.0), 16000),
        "s.tar": make_tar([("m1.json", json_bytes({"k": 1})), ("m1.wav", audio_bytes("wav", tone(1.0, 16000), 16000)),
                           ("m2.wav", audio_bytes("wav", tone(2.0, 16000, 300.0), 16000))]),
        "bad.wav": b"not audio at all" * 100,
    }
    for name, data in objects.items():
        fs.pipe(f"{s3_server.bucket}/{prefix}/{name}", data)
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, aws_access_key_id=s3_server.access_key,
                          aws_secret_access_key=s3_server.secret_key, region_name="us-east-1",
                          config=Config(signature_version="s3v4"))   # SigV4: X-Amz-* parameters
    urls = {name: client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_server.bucket, "Key": f"{prefix}/{name}",
                              "ResponseContentType": "application/octet-stream"}, ExpiresIn=3600)
        for name in objects}
    folder = tmp_path_factory.mktemp("presigned")
    manifest = folder / "inputs.txt"
    manifest.write_text("\n".join(urls.values()) + "\n")
    return urls, str(manifest), str(folder / "out")


def test_presigned_urls_are_read_but_never_recorded(presigned, tiny_checkpoint, caplog, capfd):
    urls, manifest, out = presigned
    signatures = {u.split("X-Amz-Signature=")[1].split("&")[0] for u in urls.values()}
    credentials = {u.split("X-Amz-Credential=")[1].split("&")[0] for u in urls.values()}
    assert all(len(s) == 64 for s in signatures)
    with caplog.at_level(logging.DEBUG):
        summary = run(["--input_manifest", manifest, "--input", urls["a.wav"], "--output", out,
                       "--model", tiny_checkpoint, "--batch_size", "2", "--run_id", "presigned",
                       "--max_error_fraction", "1.0"])
    # Read for real: both clips of the shard and the WAV labelled; the corrupt file one error row.
    base = {name: u.split("?")[0] for name, u in urls.items()}
    kept = "response-content-type=application%2Foctet-stream"
    assert sorted(summary.clips.column("clip_id").to_pylist()) == sorted([
        f"{base['a.wav']}?{kept}", f"{base['s.tar']}?{kept}#m1.wav", f"{base['s.tar']}?{kept}#m2.wav"])
    assert summary.clips.column("source_uri").to_pylist() == summary.clips.column("clip_id").to_pylist()
    meta = {r["member_name"]: r["meta"] for r in summary.clips.to_pylist()}
    assert meta["m1.wav"] == '{"k": 1}'
    [error] = summary.errors.to_pylist()
    assert error["source_uri"] == f"{base['bad.wav']}?{kept}" and error["stage"] == "decode"
    # The same URL given twice (manifest and --input) is one input, by its real URL.
    assert summary.discovered == 4

    recorded = [json.dumps(summary.clips.to_pylist() + summary.errors.to_pylist() + summary.segments.to_pylist(),
                           default=str)]
    with open(manifest_path(out, "presigned")) as f:
        manifest_text = f.read()
    assert f"{base['a.wav']}?{kept}" in json.loads(manifest_text)["inputs"]
    recorded.append(manifest_text)
    recorded.append("\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records))
    captured = capfd.readouterr()
    recorded += [captured.out, captured.err]
    everything = "\n".join(recorded)
    assert "X-Amz-" not in everything
    for secret in signatures | credentials:
        assert secret not in everything
