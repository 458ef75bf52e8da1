"""Keep signatures and tokens in URL query strings out of everything a run records. Beam-free.

A presigned or SAS URL carries its credential in the query string
(``?X-Amz-Signature=...&X-Amz-Credential=...``, ``?sig=...``, ``?token=...``). The pipeline
reads the real URL, but what it records - clip ids, ``source_uri``, the manifest, error
messages and log lines - goes through :func:`scrub_url` / :func:`scrub_text`, which drop
every query parameter whose name looks like a credential and keep the others, in order and
spelled as they were. Dropping (rather than masking) the parameters also keeps a clip id
stable when the same object is presigned again the next night.

Only ``http(s)://`` URLs are touched: elsewhere (``s3://b/what?.wav``, local paths) a ``?``
is part of the name, not a query.

User-info (``https://alice:PASSW0RD@host/a.wav``, ``sftp://user:pw@host/x``, ``https://TOKEN@host``)
is a credential too, in a URL of any scheme: it is dropped, user name and all, so the URL is
recorded as ``https://host/a.wav`` (a clip id that does not change when the password does).
Only the authority is looked at (between ``://`` and the next ``/``, ``?`` or ``#``), so an ``@``
in a path or member name (``s3://b/me@home.wav``) is kept.
"""
from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["is_secret_parameter", "scrub_url", "scrub_text", "scrub_recorded"]

# Parameter names (case-insensitive) that carry or describe a credential: AWS SigV4/SigV2
# (X-Amz-*, Signature, AWSAccessKeyId), Google (X-Goog-*, GoogleAccessId), Azure SAS (sig),
# CloudFront (Signature, Key-Pair-Id, Policy), and the generic token/key/secret/auth family.
_SECRET_PARAMETER = re.compile(
    r"^(x-amz-|x-goog-)|^(sig|signature|policy|googleaccessid)$|token|key|credential|secret|passw|auth",
    re.IGNORECASE)
# An http(s) URL inside free text; stops at whitespace, quotes and angle brackets.
_HTTP_URL = re.compile(r"https?://[^\s'\"<>`]+", re.IGNORECASE)
# The user-info of a URL of any scheme: "scheme://" then anything up to an "@" that comes before
# the end of the authority (the first "/", "?", "#", whitespace or quote).
_USERINFO = re.compile(r"\b([a-z][a-z0-9+.\-]*://)[^/?#@\s'\"<>`]*@", re.IGNORECASE)


def is_secret_parameter(name: str) -> bool:
    return bool(_SECRET_PARAMETER.search(unquote(name).strip()))


def _scrub_one(url: str) -> str:
    head, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_, fragment = rest.partition("#")
    kept = [part for part in query.split("&") if part and not is_secret_parameter(part.split("=", 1)[0])]
    return head + ("?" + "&".join(kept) if kept else "") + hash_ + fragment


def scrub_text(text: str) -> str:
    """``text`` with the user-info of every URL and the credential parameters of every http(s)
    URL in it removed."""
    if not text:
        return text
    if "@" in text:
        text = _USERINFO.sub(r"\1", text)
    if "?" not in text:
        return text
    return _HTTP_URL.sub(lambda m: _scrub_one(m.group(0)), text)


def scrub_recorded(value):
    """A copy of a JSON-like value (a manifest) with every string in it scrubbed."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub_recorded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_recorded(v) for v in value]
    return value


def scrub_url(url: str | None) -> str | None:
    """One URI as it may be recorded (clip id, source_uri, manifest); None stays None."""
    return None if url is None else scrub_text(url)
