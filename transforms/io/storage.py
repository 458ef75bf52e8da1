"""Object-storage access for the pipeline: fsspec filesystems, retries, credentials. Beam-free.

Storage options
---------------
``--storage_options`` is a JSON object of fsspec keyword arguments. It is either
*flat* (``{"key": ..., "secret": ..., "client_kwargs": {"endpoint_url": ...}}``),
applied to every non-local filesystem, or *keyed by protocol*
(``{"s3": {...}, "https": {...}}``), each part applied to that protocol only.
Local paths never get options.

Credentials never travel inside pipeline options (Beam's SDK workers log their
options at INFO): the launcher splits them off (:func:`split_secrets`) and hands
them to the DirectRunner's workers through the environment variable
:data:`SECRETS_ENV`, which :func:`resolve_storage_options` merges back in, in the
worker, when a DoFn opens its filesystems in ``setup()``.

Retries
-------
Listing and opening are retried with exponential backoff and jitter when the
error looks transient (:func:`is_transient`): connection resets, timeouts, 5xx
surfaced as OSError. Missing files and refused permissions fail at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import errno
import io
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

import fsspec

from transforms.io.url_secrets import scrub_text

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

SECRETS_ENV = "AUDIO_LABELLING_STORAGE_SECRETS"

# Option names (at any depth, compared lower-case) that hold credentials.
SECRET_KEYS = frozenset({
    "key", "secret", "token", "password", "passwd", "session_token", "security_token",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "account_key", "sas_token", "connection_string", "client_secret", "credential",
    "credentials", "access_key", "secret_key", "authorization", "api_key", "private_key",
})
# Any name containing one of these (case-insensitive) is a credential too: HTTP headers such as
# Authorization, Proxy-Authorization, Cookie, X-Api-Key, X-Auth-Token, X-Session-Id, and
# options such as account_key or session_token. A harmless option caught by them loses nothing:
# it still reaches the filesystems, only by the secrets' way (SECRETS_ENV), never the logs.
SECRET_MARKERS = ("secret", "password", "passwd", "token", "credential", "key", "session", "auth",
                  "cookie")

LOCAL_PROTOCOLS = frozenset({"file", "local"})
_PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                     FileExistsError)
# Errnos that clients (s3fs maps S3 error codes to them) use for requests that cannot succeed.
_PERMANENT_ERRNOS = frozenset({
    errno.EINVAL, errno.EPERM, errno.EACCES, errno.ENOENT, errno.EEXIST, errno.EISDIR,
    errno.ENOTDIR, errno.ENAMETOOLONG, errno.ENOTEMPTY, errno.EMSGSIZE, errno.EROFS, errno.ENOSPC,
    errno.ELOOP, errno.ENXIO, errno.ENODEV})   # a symlink loop, a device or FIFO: never readable
# Network failures that some clients (botocore, aiohttp) raise outside the OSError tree.
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ResponseStreamingError", "IncompleteReadError", "ServerDisconnectedError",
    "ClientConnectorError", "ClientPayloadError", "ClientOSError", "ServerTimeoutError",
    "ProtocolError", "IncompleteRead", "RemoteDisconnected",
})


class StorageOptionsError(ValueError):
    """--storage_options is not a JSON object (the message never echoes its content)."""


# ---------------------------------------------------------------- retries

def is_transient(error: BaseException) -> bool:
    """True for errors worth retrying: network trouble, timeouts, throttling."""
    if isinstance(error, _PERMANENT_ERRORS):
        return False
    if isinstance(error, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if type(error).__name__ in _TRANSIENT_NAMES:
        return True
    if isinstance(error, OSError):
        if error.errno in _PERMANENT_ERRNOS:   # e.g. S3 400 Bad Request / InvalidArgument
            return False
        # gzip.BadGzipFile and friends are corrupt data, not a flaky connection.
        return type(error).__module__ not in ("gzip", "zipfile", "tarfile", "lzma", "bz2")
    return False


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4            # tries in all, the first one included
    base_delay: float = 0.5      # seconds before the first retry; doubles each time
    max_delay: float = 8.0

    def delay(self, retry_index: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2 ** retry_index))
        return ceiling * (0.5 + random.random() / 2)   # jitter: callers don't retry in lockstep


DEFAULT_POLICY = RetryPolicy()


def retry(fn: Callable[[], T], what: str, policy: RetryPolicy = DEFAULT_POLICY,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn``; on a transient error wait and call again, up to ``policy.attempts`` times."""
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as e:
            if attempt == policy.attempts - 1 or not is_transient(e):
                raise
            pause = policy.delay(attempt)
            _LOG.warning("transient storage error on %s (%s: %s); retry %d of %d in %.2f s",
                         scrub_text(what), type(e).__name__, scrub_text(str(e)), attempt + 1,
                         policy.attempts - 1, pause)
            sleep(pause)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- options and secrets

def parse_storage_options(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        # e.msg/pos only: the document may hold credentials.
        raise StorageOptionsError(
            f"--storage_options is not valid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(value, dict):
        raise StorageOptionsError("--storage_options must be a JSON object")
    return value


def is_secret_name(name: str) -> bool:
    """Whether an option or header of this name holds a credential (see SECRET_MARKERS)."""
    low = name.lower()
    return low in SECRET_KEYS or any(m in low for m in SECRET_MARKERS)


def split_secrets(options: dict) -> tuple[dict, dict]:
    """(public, secret): credentials, at any depth, moved to the second dict."""
    public, secret = {}, {}
    for name, value in options.items():
        if is_secret_name(str(name)):
            secret[name] = value
        elif isinstance(value, dict):
            pub, sec = split_secrets(value)
            public[name] = pub
            if sec:
                secret[name] = sec
        else:
            public[name] = value
    return public, secret


def merge_options(base: dict, extra: dict) -> dict:
    """Deep merge; ``extra`` wins."""
    merged = copy.deepcopy(base)
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = merge_options(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


def resolve_storage_options(public: dict | None) -> dict:
    """Public options plus the secrets the launcher left in :data:`SECRETS_ENV`."""
    secret_text = os.environ.get(SECRETS_ENV)
    secret = json.loads(secret_text) if secret_text else {}
    hide_in_logs(secret_values(secret) | aws_env_credentials())
    return merge_options(public or {}, secret)


# ---------------------------------------------------------------- credentials in log records

AWS_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
LOG_REDACTED = "<redacted>"
_MIN_HIDDEN_CHARS = 6            # shorter values would garble unrelated log text
_HIDDEN: set[str] = set()
_factory_installed = False


def secret_values(secrets: Any) -> set[str]:
    """Every string, at any depth, of a dict of credentials."""
    if isinstance(secrets, dict):
        return set().union(*(secret_values(v) for v in secrets.values()))
    if isinstance(secrets, (list, tuple)):
        return set().union(*(secret_values(v) for v in secrets))
    return {secrets} if isinstance(secrets, str) else set()


def aws_env_credentials() -> set[str]:
    return {os.environ[name] for name in AWS_CREDENTIAL_ENV if os.environ.get(name)}


def hide_in_logs(values: set[str]) -> set[str]:
    """From now on, every log record this process makes has these strings replaced by
    :data:`LOG_REDACTED`, whatever logger or handler. Needed because third-party DEBUG logging
    prints them: botocore logs each request's headers, whose ``Authorization`` names the access
    key id. Returns the values that were not hidden already (for :func:`unhide_in_logs`)."""
    added = {v for v in values if len(v) >= _MIN_HIDDEN_CHARS} - _HIDDEN
    _HIDDEN.update(added)
    if added:
        _install_scrubbing_factory()
    return added


def scrub_urls_in_logs() -> None:
    """From now on, every log record this process makes has the signature/token parameters of
    http(s) URLs removed (transforms/io/url_secrets.py): fsspec/aiohttp errors and retries name
    the URL they failed on, presigned query string included."""
    global _scrub_urls
    _scrub_urls = True
    _install_scrubbing_factory()


_scrub_urls = False


def _install_scrubbing_factory() -> None:
    global _factory_installed
    if _factory_installed:
        return
    make_record = logging.getLogRecordFactory()

    def scrubbing_factory(*args, **kwargs):
        record = make_record(*args, **kwargs)
        if _HIDDEN or _scrub_urls:
            _scrub(record)
        return record

    logging.setLogRecordFactory(scrubbing_factory)
    _factory_installed = True


def unhide_in_logs(values: set[str]) -> None:
    _HIDDEN.difference_update(values)


def _redact_text(text: str) -> str:
    for value in sorted(_HIDDEN, key=len, reverse=True):
        text = text.replace(value, LOG_REDACTED)
    return scrub_text(text) if _scrub_urls else text


def _needs_redaction(text: str) -> bool:
    return any(value in text for value in _HIDDEN) or (_scrub_urls and scrub_text(text) != text)


def _scrub(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:   # a malformed record: logging reports it when it is emitted
        return
    if _needs_redaction(message):
        record.msg, record.args = _redact_text(message), ()
    if record.exc_info:
        text = logging.Formatter().formatException(record.exc_info)
        if _needs_redaction(text):
            record.exc_text = _redact_text(text)


def is_per_protocol(options: dict) -> bool:
    known = set(fsspec.available_protocols()) | set(fsspec.registry)
    return bool(options) and all(
        name in known and isinstance(value, dict) for name, value in options.items())


def options_for_protocol(options: dict, protocol: str) -> dict:
    if protocol in LOCAL_PROTOCOLS or not options:
        return {}
    if is_per_protocol(options):
        found = options.get(protocol)
        if found is None:   # "s3a" / "gcs" / "abfs" share settings with their aliases
            try:
                aliases = fsspec.get_filesystem_class(protocol).protocol
            except (ImportError, ValueError):
                aliases = ()
            for alias in (aliases,) if isinstance(aliases, str) else aliases:
                found = found or options.get(alias)
        return dict(found or {})
    return dict(options)


def protocol_of(url: str) -> str:
    return fsspec.core.split_protocol(url)[0] or "file"


# ---------------------------------------------------------------- filesystem access

class Storage:
    """fsspec filesystems for a run, one per protocol, created on first use and kept.

    Beam DoFns build one in ``setup()`` so clients and connection pools are reused
    across elements. Every list/open goes through :func:`retry`.
    """

    def __init__(self, storage_options: dict | None = None, policy: RetryPolicy = DEFAULT_POLICY):
        scrub_urls_in_logs()   # every process that opens storage keeps presigned queries out of logs
        self._options = storage_options or {}
        self.policy = policy
        self._filesystems: dict[str, Any] = {}

    def fs_and_path(self, url: str):
        if "::" in url:   # chained URL (e.g. simplecache::s3://...): let fsspec assemble it
            return fsspec.core.url_to_fs(url, **self._options_for(protocol_of(url.split("::")[-1])))
        protocol = protocol_of(url)
        fs = self._filesystems.get(protocol)
        if fs is None:
            # A fresh instance, not fsspec's process-wide one: its listings cache would outlive
            # this run, and a process that launches several runs (a scheduler, the DirectRunner)
            # would then find a file added since an earlier run's listing "not found".
            fs = fsspec.filesystem(protocol, skip_instance_cache=True, **self._options_for(protocol))
            self._filesystems[protocol] = fs
        return fs, fs._strip_protocol(url)

    def _options_for(self, protocol: str) -> dict:
        return options_for_protocol(self._options, protocol)

    def retry(self, fn: Callable[[], T], what: str) -> T:
        return retry(fn, what, self.policy)

    def open(self, url: str, block_size: int | None = None, compression: str | None = None) -> BinaryIO:
        fs, path = self.fs_and_path(url)
        kwargs = {"block_size": block_size, "cache_type": "readahead"} if block_size else {}
        if compression:
            kwargs["compression"] = compression
        return self.retry(lambda: fs.open(path, "rb", **kwargs), url)

    def version(self, url: str) -> str | None:
        """A fingerprint of the object's current content: its ETag where the store has one,
        else size and modification time. None when it cannot be looked up (the read that
        follows then reports the problem)."""
        fs, path = self.fs_and_path(url)
        try:
            info = self.retry(lambda: fs.info(path), url)
        except Exception:
            return None
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
        if etag:
            return f"etag:{str(etag).strip(chr(34))}"
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
        return f"size:{info.get('size')};mtime:{mtime}"

    def unstrip(self, fs, path: str) -> str:
        """fsspec strips the protocol; put it back so URIs are usable anywhere."""
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if protocol in LOCAL_PROTOCOLS:
            return path
        if "://" in path:   # http(s) keeps the whole URL as its path
            return path
        return fs.unstrip_protocol(path)

    def canonical(self, url: str) -> str:
        """One spelling per object (``memory://a`` and ``memory:///a``, ``file:///x`` and ``/x``)."""
        if "::" in url:
            return url
        fs, path = self.fs_and_path(url)
        return self.unstrip(fs, path)

    @contextlib.contextmanager
    def open_clip(self, source) -> Iterator[BinaryIO]:
        """The bytes of one clip: in the element already (tar members) or at its URI."""
        if source.data is not None:
            yield io.BytesIO(source.data)
            return
        with self.open(source.location) as f:
            yield f
