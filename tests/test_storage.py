"""Retries, storage options and where credentials go."""
import errno
import json
import os

import pytest

from pipeline.launch.storage_settings import StorageSettings, drop_flags
from transforms.io.storage import (SECRETS_ENV, RetryPolicy, StorageOptionsError, is_transient,
                                options_for_protocol, parse_storage_options, resolve_storage_options,
                                retry, split_secrets)

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


class Flaky:
    """A call that fails ``failures`` times with ``error`` before it succeeds."""

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_transient_errors_are_retried_with_growing_pauses():
    pauses = []
    call = Flaky(2, ConnectionResetError("reset"))
    assert retry(call, "s3://b/k", FAST, sleep=pauses.append) == "ok"
    assert call.calls == 3 and len(pauses) == 2
    assert 0.005 <= pauses[0] <= 0.01 and 0.01 <= pauses[1] <= 0.02


def test_permanent_errors_fail_at_once_and_retries_run_out():
    missing = Flaky(1, FileNotFoundError("s3://b/k"))
    with pytest.raises(FileNotFoundError):
        retry(missing, "s3://b/k", FAST, sleep=lambda s: None)
    assert missing.calls == 1
    down = Flaky(10, TimeoutError("timed out"))
    with pytest.raises(TimeoutError):
        retry(down, "s3://b/k", FAST, sleep=lambda s: None)
    assert down.calls == FAST.attempts


def test_transient_classification():
    class EndpointConnectionError(Exception):   # botocore's, raised outside the OSError tree
        pass

    assert is_transient(ConnectionRefusedError()) and is_transient(TimeoutError())
    assert is_transient(OSError(errno.EIO, "SlowDown")) and is_transient(EndpointConnectionError())
    assert not is_transient(OSError(errno.EINVAL, "Bad Request"))
    assert not is_transient(FileNotFoundError()) and not is_transient(PermissionError())
    assert not is_transient(ValueError()) and not is_transient(__import__("gzip").BadGzipFile())


def test_credentials_are_split_off_at_any_depth():
    public, secret = split_secrets({
        "key": "AK", "secret": "SK", "anon": False,
        "client_kwargs": {"endpoint_url": "http://h", "aws_session_token": "T"},
        "s3": {"headers": {"Authorization": "Bearer x"}}})
    assert public == {"anon": False, "client_kwargs": {"endpoint_url": "http://h"}, "s3": {"headers": {}}}
    assert secret == {"key": "AK", "secret": "SK", "client_kwargs": {"aws_session_token": "T"},
                      "s3": {"headers": {"Authorization": "Bearer x"}}}


def test_every_credential_like_header_leaves_the_public_options():
    """Not only Authorization: any header or option whose name suggests a credential (issue 19,
    finding 9)."""
    secrets = {"Authorization": "Bearer SECRET1", "Proxy-Authorization": "Basic SECRET2",
               "Cookie": "sid=SECRET3", "X-Api-Key": "SECRET4", "X-Auth-Token": "SECRET5",
               "X-Session-Id": "SECRET6", "x-client-secret": "SECRET7"}
    headers = {**secrets, "Accept": "audio/wav", "User-Agent": "labeller/1"}
    public, secret = split_secrets({"https": {"headers": headers, "block_size": 1024}})
    assert public == {"https": {"headers": {"Accept": "audio/wav", "User-Agent": "labeller/1"},
                                "block_size": 1024}}
    assert secret == {"https": {"headers": secrets}}
    settings, argv = StorageSettings.from_argv(
        ["--input", "https://h/a.wav", "--storage_options", json.dumps({"https": {"headers": headers}})])
    assert "SECRET" not in " ".join(argv) and "audio/wav" in " ".join(argv)
    assert settings.fsspec_options() == {"https": {"headers": headers}}


def test_bad_storage_options_never_echo_their_content():
    with pytest.raises(StorageOptionsError) as e:
        parse_storage_options('{"secret": "hunter2", oops}')
    assert "hunter2" not in str(e.value)
    with pytest.raises(StorageOptionsError):
        parse_storage_options('["a list"]')


def test_flat_options_go_to_remote_filesystems_and_per_protocol_ones_to_theirs():
    flat = {"client_kwargs": {"endpoint_url": "http://h"}}
    assert options_for_protocol(flat, "s3") == flat and options_for_protocol(flat, "file") == {}
    keyed = {"s3": {"anon": True}, "https": {"block_size": 0}}
    assert options_for_protocol(keyed, "s3a") == {"anon": True}
    assert options_for_protocol(keyed, "https") == {"block_size": 0}
    assert options_for_protocol(keyed, "memory") == {}


def test_drop_flags_handles_both_spellings():
    argv = ["--a=1", "--s3_secret_access_key", "S", "--b", "--s3_access_key_id=K", "x"]
    assert drop_flags(argv, ("--s3_secret_access_key", "--s3_access_key_id")) == ["--a=1", "--b", "x"]


def test_launcher_moves_every_credential_out_of_the_arguments(monkeypatch):
    monkeypatch.delenv(SECRETS_ENV, raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    storage_options = {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, "key": "AK", "secret": "SK1"}
    settings, argv = StorageSettings.from_argv(
        ["--input", "s3://b/x", f"--storage_options={json.dumps(storage_options)}",
         "--s3_secret_access_key", "SK2", "--output", "s3://b/out"])
    assert not any("SK1" in a or "SK2" in a or "AK" in a for a in argv)
    # the endpoint, public, reaches Beam's S3 sink as its own option
    assert "--s3_endpoint_url=http://127.0.0.1:9" in argv
    assert settings.fsspec_options() == storage_options        # fsspec's own key wins
    assert settings.aws_env == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK1"}
    with settings.environment():
        assert resolve_storage_options(settings.public) == storage_options
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == "SK1"
    assert SECRETS_ENV not in os.environ and "AWS_SECRET_ACCESS_KEY" not in os.environ


def test_beam_s3_options_alone_configure_fsspec_too():
    settings, argv = StorageSettings.from_argv(
        ["--s3_endpoint_url=http://h:1", "--s3_access_key_id=AK", "--s3_secret_access_key=SK"])
    assert argv == ["--s3_endpoint_url=http://h:1",
                    '--storage_options={"s3": {"client_kwargs": {"endpoint_url": "http://h:1"}}}']
    assert settings.fsspec_options() == {
        "s3": {"client_kwargs": {"endpoint_url": "http://h:1"}, "key": "AK", "secret": "SK"}}
    assert settings.public == {"s3": {"client_kwargs": {"endpoint_url": "http://h:1"}}}


def test_cli_rejects_bad_storage_options_without_echoing_them(capsys):
    from pipeline.main import main

    assert main(["--input", "x", "--output", "y", "--model", "z",
                 "--storage_options", '{"secret": "hunter2",}']) == 2
    err = capsys.readouterr().err
    assert "--storage_options is not valid JSON" in err and "hunter2" not in err
