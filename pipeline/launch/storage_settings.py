"""Launcher side of storage configuration: one view of --storage_options and Beam's --s3_* options,
with every credential kept out of the pipeline options.

Why: Beam's SDK workers log their whole pipeline options at INFO when they
start (``Pipeline_options: {...}``), and runners keep them in job descriptions.
So the launcher removes ``--s3_access_key_id``, ``--s3_secret_access_key``,
``--s3_session_token`` and the credential fields of ``--storage_options`` from
the arguments before the pipeline is built, and for the run's duration puts
them in environment variables instead, which the DirectRunner's worker
processes inherit:

* Beam's S3 filesystem (the Parquet sink) builds its boto3 client with no
  explicit keys, so boto3 finds AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
  AWS_SESSION_TOKEN;
* our fsspec DoFns merge :data:`transforms.io.storage.SECRETS_ENV` into their
  options in ``setup()``.

The two sets fill each other in for s3: an endpoint or key given only as
``--s3_*`` reaches fsspec (inputs, manifests, reading the tables back), and one
given only in ``--storage_options`` reaches Beam's S3 sink.
On remote runners environment variables of the launcher do not reach the
workers: the launcher refuses credentials given on its command line there
(pipeline/launch/worker_reach.py); those workers get theirs the platform's way
(worker environment, IAM roles, workload identity).
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from apache_beam.options.pipeline_options import PipelineOptions, S3Options

from pipeline.launch.options import LabelAudioOptions
from transforms.io.storage import (SECRETS_ENV, aws_env_credentials, hide_in_logs, is_per_protocol,
                                merge_options, parse_storage_options, secret_values, split_secrets,
                                unhide_in_logs)
from transforms.io.url_secrets import scrub_text

S3_SECRET_FLAGS = ("--s3_access_key_id", "--s3_secret_access_key", "--s3_session_token")
STORAGE_FLAG = "--storage_options"
_AWS_ENV = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY", "token": "AWS_SESSION_TOKEN"}


def _map_flag_values(argv: list[str], names: tuple[str, ...], change) -> list[str]:
    """argv with the value of each ``--name value`` / ``--name=value`` for each name replaced by
    ``change(value)``, or the flag dropped with its value where that returns None."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name, equals, value = arg.partition("=")
        i += 1
        if name not in names:
            out.append(arg)
            continue
        if not equals and i < len(argv):
            value, i = argv[i], i + 1
        elif not equals:                 # a flag without its value: left for the parser to refuse
            out.append(arg)
            continue
        changed = change(value)
        if changed is not None:
            out.append(f"{name}={changed}")
    return out


def drop_flags(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv without ``--name value`` / ``--name=value`` for each name."""
    return _map_flag_values(argv, names, lambda value: None)


# Our options that hold URLs: Beam's copy of them (which its workers and runners log, and Flink's
# web UI shows) gets them without user-info or credential query parameters.
URL_FLAGS = ("--input", "--input_manifest", "--output", "--model", "--skip_labelled", "--label_map",
             "--class_thresholds")


def without_url_credentials(argv: list[str], names: tuple[str, ...] = URL_FLAGS) -> list[str]:
    """argv with the value of each ``--name value`` / ``--name=value`` scrubbed as a recorded URL
    is (transforms/io/url_secrets.py). Only for the options Beam keeps: the graph is built from
    the real values, so the DoFns that open the URLs still get their credentials."""
    return _map_flag_values(argv, names, scrub_text)


def _s3_section(options: dict, per_protocol: bool) -> dict:
    """The options s3 gets."""
    if per_protocol:
        return options.get("s3") or options.get("s3a") or {}
    return options


def _with_s3(options: dict, values: dict, per_protocol: bool) -> dict:
    """``options`` with ``values`` added to what s3 gets, where not set already."""
    section = _s3_section(options, per_protocol)
    patch = {k: v for k, v in values.items() if v is not None and k not in section}
    if "endpoint_url" in patch:
        endpoint = patch.pop("endpoint_url")
        if "endpoint_url" not in section and "endpoint_url" not in section.get("client_kwargs", {}):
            patch["client_kwargs"] = {"endpoint_url": endpoint}
    if not patch:
        return options
    if per_protocol:
        name = "s3a" if "s3a" in options and "s3" not in options else "s3"
        patch = {name: patch}
    return merge_options(options, patch)


def _s3_endpoint(options: dict, per_protocol: bool) -> str | None:
    section = _s3_section(options, per_protocol)
    return section.get("endpoint_url") or section.get("client_kwargs", {}).get("endpoint_url")


@dataclass
class StorageSettings:
    public: dict = field(default_factory=dict)     # fsspec options without credentials
    secret: dict = field(default_factory=dict)     # fsspec credentials
    aws_env: dict = field(default_factory=dict)    # AWS_* variables for Beam's S3 sink
    secret_flags: list = field(default_factory=list)   # the options that carried credentials

    @classmethod
    def from_argv(cls, argv: list[str]) -> tuple["StorageSettings", list[str]]:
        """Settings, and argv with every credential removed (safe to hand to Beam)."""
        options = PipelineOptions(argv)
        given = parse_storage_options(options.view_as(LabelAudioOptions).storage_options)
        # Flat options apply to every remote filesystem; per-protocol ones stay per protocol.
        per_protocol = not given or is_per_protocol(given)
        s3 = options.view_as(S3Options)
        public, secret = split_secrets(given)
        secret_flags = ([STORAGE_FLAG] if secret else []) + [
            flag for flag in S3_SECRET_FLAGS if getattr(s3, flag.removeprefix("--"))]
        public = _with_s3(public, {"endpoint_url": s3.s3_endpoint_url}, per_protocol)
        secret = _with_s3(secret, {"key": s3.s3_access_key_id, "secret": s3.s3_secret_access_key,
                                   "token": s3.s3_session_token}, per_protocol)
        # Beam's S3 sink: its own flags win; else what fsspec's s3 section says.
        s3_secret = _s3_section(secret, per_protocol)
        aws_env = {env: s3_secret[name] for name, env in _AWS_ENV.items()
                   if isinstance(s3_secret.get(name), str)}
        scrubbed = drop_flags(argv, S3_SECRET_FLAGS + (STORAGE_FLAG,))
        if public:
            scrubbed.append(f"{STORAGE_FLAG}={json.dumps(public)}")
        endpoint = _s3_endpoint(public, per_protocol)
        if s3.s3_endpoint_url is None and endpoint:
            scrubbed.append(f"--s3_endpoint_url={endpoint}")
        check = PipelineOptions(scrubbed).view_as(S3Options)
        assert not (check.s3_access_key_id or check.s3_secret_access_key or check.s3_session_token)
        return cls(public=public, secret=secret, aws_env=aws_env, secret_flags=secret_flags), scrubbed

    def fsspec_options(self) -> dict:
        """Complete options, for the launcher's own fsspec calls (checkpoint, summary)."""
        return merge_options(self.public, self.secret)

    @contextlib.contextmanager
    def environment(self) -> Iterator[None]:
        """Credentials in os.environ for the run (workers inherit them); restored afterwards.
        Meanwhile every log record of this process has them (and AWS_* credentials from the
        environment) replaced by ``<redacted>``: botocore's DEBUG logging prints the access key."""
        wanted = dict(self.aws_env)
        if self.secret:
            wanted[SECRETS_ENV] = json.dumps(self.secret)
        saved = {name: os.environ.get(name) for name in wanted}
        os.environ.update(wanted)
        hidden = hide_in_logs(secret_values(self.secret) | set(self.aws_env.values())
                              | aws_env_credentials())
        try:
            yield
        finally:
            unhide_in_logs(hidden)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
