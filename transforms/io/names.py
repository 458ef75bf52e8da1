"""Names that are not UTF-8: how they are recorded, and how the bytes are had back. Beam-free.

A filesystem or a tar header holds a name as bytes; any byte string is a name. Python hands
out the ones that are not valid UTF-8 with each undecodable byte as a lone surrogate
(``caf\\xe9.wav`` -> ``'caf\\udce9.wav'``, PEP 383), which Beam's coders and Parquet's strings
refuse. So what is recorded (clip ids, ``source_uri``, ``member_name``, error rows) is:

* a name that is valid UTF-8: the name, as it is;
* any other name: the name with each byte that is not part of valid UTF-8 written ``%XX``
  (two upper-case hex digits: RFC 3986 percent-encoding), and each ``%`` of that name
  written ``%25`` (``caf\\xe9 100%.wav`` -> ``caf%E9 100%25.wav``).

Reversible: :func:`name_bytes` gives the bytes back. A recorded name whose percent-decoding
(``urllib.parse.unquote_to_bytes``) is not valid UTF-8 was escaped, and that decoding is the
original; any other recorded name is the name itself, in UTF-8. The one name this cannot tell
apart is a valid UTF-8 name spelled literally like an escaped one (a file really called
``caf%E9.wav`` beside ``caf\\xe9.wav``): both are recorded ``caf%E9.wav``, and a run holding both
fails its duplicate-clip-id check rather than mixing them up. The same bytes are recorded the
same way in every run, so clip ids stay stable.

The bytes themselves travel beside the recorded name (``SourceRef.raw``, ``ClipSource.raw``)
for what must open the file again.
"""
from __future__ import annotations

import os
from urllib.parse import unquote_to_bytes

__all__ = ["is_utf8_name", "record_name", "name_bytes", "raw_of"]

_ESCAPED_BYTE = range(0xDC80, 0xDD00)       # surrogateescape's stand-ins for bytes 0x80-0xFF
_SURROGATE = range(0xD800, 0xE000)


def is_utf8_name(name: str) -> bool:
    """True when ``name`` holds no lone surrogate (it encodes to UTF-8 as it is)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def record_name(name: str | None) -> str | None:
    """The name as it is recorded (see the module docstring); None stays None."""
    if name is None or is_utf8_name(name):
        return name
    out = []
    for char in name:
        code = ord(char)
        if code in _ESCAPED_BYTE:
            out.append(f"%{code - 0xDC00:02X}")
        elif code in _SURROGATE:              # not from bytes: its surrogatepass encoding
            out.extend(f"%{b:02X}" for b in char.encode("utf-8", "surrogatepass"))
        elif char == "%":
            out.append("%25")
        else:
            out.append(char)
    return "".join(out)


def name_bytes(recorded: str) -> bytes:
    """The bytes of the name that was recorded as ``recorded`` (the reverse of record_name)."""
    decoded = unquote_to_bytes(recorded)
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return decoded
    return recorded.encode("utf-8")


def raw_of(name: str) -> bytes | None:
    """The bytes of a name that is not valid UTF-8 (to open it again), else None."""
    if is_utf8_name(name):
        return None
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:   # a surrogate no filesystem gave: nothing to open by
        return name.encode("utf-8", "surrogatepass")

