"""Stream WebDataset tar shards member by member. Beam-free.

A shard (``.tar``, ``.tar.gz``, ``.tgz``) is read front to back with tarfile's
stream mode over a file object: never downloaded whole, never extracted. Plain
and gzip tars are told apart by their first bytes, whatever the name; bzip2, xz
and zstd content is refused (a shard error), since those decompressors hand
out all a block holds at once. Audio members are yielded as they are read, so
memory holds a few members, not the shard nor a whole sample (the members sharing
a key: ``spk01.utt001.wav``, ``spk01.utt002.wav``, ... are all one sample ``spk01``).

Member rules (WebDataset's): a member's *key* is its name up to the first dot of
its basename (``a/b/000123.seg.flac`` -> key ``a/b/000123``), its *extension*
what follows that dot; consecutive members sharing a key form a sample.

* audio member (final suffix in AUDIO_EXTENSIONS): one clip; its bytes are read
  and yielded as a :class:`ShardClip` with ``member_name`` as identity.
* sidecar (extension exactly ``json``): its JSON becomes ``meta`` of the audio
  clips of the same sample (the rule below says which). Invalid or oversized JSON
  is counted and dropped (``meta`` stays null); the audio is still labelled.
* anything else (``.txt``, ``.cls``, ``.jpg``, ``x.meta.json``, directories,
  links, devices): skipped unread and counted in ``ShardStats.ignored`` - it is
  not an input clip, so it gets no row in either table.

When an audio member is yielded (the sidecar may come before or after it)
--------------------------------------------------------------------------
WebDataset writers put a sample's members together, sorted by extension
(webdataset's TarWriter, ``tar --sort=name``): ``x.json`` comes before
``x.wav`` but after ``x.flac``. So an audio member is yielded

1. at once, with the sidecar's meta, when its sample's ``.json`` was already read;
2. else it is held until the sidecar cannot come any more, and yielded then: when
   the sidecar arrives (with its meta), when the key changes or the shard ends, or
   when a member of the sample sorting after ``json`` is read (in sorted order the
   sidecar would have come before it). Whatever the order, a held member waits at
   least for the next member, so a sidecar written right after its audio (an
   unsorted ``x.wav``, ``x.json``) is still applied.

A key shared by many audio members that sort after ``json`` (``spk01.utt001.wav``,
...) thus holds at most one member at a time. Members sorting before ``json``
(``rec.0001.flac``, ``rec.0002.flac``, ... ``rec.json``) are held until the
sidecar or the sample's end; the audio bytes held for one sample are bounded by
``max_sample_bytes`` (``--max_sample_bytes``): a member that would take them past
it is not read and becomes a :class:`MemberProblem` (``SampleTooLarge``), and a
single audio member larger than it is one too (``MemberTooLarge``). A sidecar that
arrives after some of its sample's audio was yielded without it (an unsorted
shard) applies to the sample's later audio only and is counted
(``ShardStats.sidecars_late``).

Member names are identifiers only: nothing is ever written to disk, so absolute
names or ``..`` components are harmless and kept verbatim.

A second audio member with a name already seen in the shard, or one larger than
the limits above, is yielded as a :class:`MemberProblem` (an errors-table
row for that member). A transient storage error mid-stream re-opens the shard
and resumes at the first member of the sample being read (to read its sidecar
again), skipping the members already yielded; a permanent one (corrupt or
truncated data) raises :class:`ShardReadError` saying after which member and
at which offset reading stopped; what was yielded before stays yielded, and the
held members of the sample being read (read in full) are yielded before it. Errors of
the machine are no error of the shard and are raised (transforms/io/job_failures.py): a
transient error that persists past the retries (:class:`StorageUnavailable`), and MemoryError.

Header data is bounded too: the extended headers of one member (GNU long names and links,
pax records, the global pax records kept so far, GNU sparse maps) may hold at most
``MAX_HEADER_BYTES`` (1 MiB); past it the shard ends with a :class:`TarHeaderTooLarge`
shard error, raised before the claimed bytes are read (tarfile alone reads what a header
claims in one piece: a 1 MB ``.tar.gz`` can claim a 1 GiB long name). A
header cut short or failing its checksum after the first is such an error too
(tarfile alone would end the archive there quietly), and so is a member whose
header claims more data than the shard holds (found by reading, never by
seeking: tarfile's stream seek would spin up to any claimed offset).
"""
from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from transforms.io.job_failures import StorageUnavailable, is_machine_failure
from transforms.io.sources import is_audio_name
from transforms.io.storage import DEFAULT_POLICY, RetryPolicy, is_transient
from transforms.io.url_secrets import scrub_url

MAX_MEMBER_BYTES = 1 << 30         # 1 GiB: a header may claim any size
MAX_SAMPLE_BYTES = 256 << 20       # default --max_sample_bytes: audio held for one sample
MAX_SIDECAR_BYTES = 1 << 20        # 1 MiB of JSON metadata per sample
# Extended header data read for one member: GNU long names and links, pax records (the global
# ones kept so far included), GNU sparse maps. Real ones are a few hundred bytes; tarfile reads
# whatever size a header claims in one piece (a 1 MB .tar.gz can claim 1 GiB of zeros).
MAX_HEADER_BYTES = 1 << 20
_SKIP_CHUNK = 1 << 20              # members not read are skipped in reads of this size
_GZIP_MAGIC = b"\x1f\x8b"
# Compressions tarfile's "r|*" would also take. Their decompressors hand out all a block holds
# at once (bzip2: ~1 GiB of zeros in ~1 KB), so they are refused rather than decompressed.
_REFUSED_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}


@dataclass(frozen=True)
class ShardClip:
    member_name: str
    data: bytes = field(repr=False)
    meta: str | None = None          # canonical JSON text of the sample's sidecar


@dataclass(frozen=True)
class MemberProblem:
    member_name: str
    error_type: str
    message: str


@dataclass
class ShardStats:
    members: int = 0                 # tar members seen (headers read)
    audio: int = 0                   # audio members yielded or reported
    ignored: int = 0                 # non-audio, non-sidecar members skipped
    sidecars: int = 0
    sidecars_invalid: int = 0
    sidecars_late: int = 0           # sidecars read after some of their sample's audio was yielded
    resumed: int = 0                 # transient failures recovered from
    last_member: str | None = None   # last member fully read
    tar_offset: int = 0              # offset in the (uncompressed) tar stream of the next header
    bytes_read: int = 0              # position in the shard object (compressed bytes consumed)


class ShardReadError(Exception):
    """The shard could not be read (further). ``cause`` is the underlying error."""

    def __init__(self, shard_uri: str, stats: ShardStats, cause: BaseException):
        self.shard_uri = shard_uri
        self.stats = stats
        self.cause = cause
        super().__init__(f"{_where(stats)}: {type(cause).__name__}: {cause}")


def _where(stats: ShardStats) -> str:
    if stats.members == 0 and stats.bytes_read == 0:
        return "could not open or read the shard"
    if stats.last_member is None:
        return f"stopped before the first complete member, {stats.bytes_read} bytes into the shard"
    return (f"stopped after member {stats.last_member!r} (member {stats.members} read, "
            f"tar offset {stats.tar_offset}, {stats.bytes_read} bytes of the shard read)")


def webdataset_key(name: str) -> tuple[str, str]:
    """(key, extension): the name up to / after the first dot of its basename."""
    slash = name.rfind("/") + 1
    base = name[slash:]
    stem, dot, ext = base.partition(".")
    return name[:slash] + stem, ext if dot else ""


class _CountingReader:
    """Read-only wrapper that counts the bytes tarfile pulled from the shard; ``peek`` looks at
    the first bytes (the compression's magic) without consuming them."""

    def __init__(self, raw: BinaryIO, stats: ShardStats):
        self._raw = raw
        self._stats = stats
        self._head = b""

    def peek(self, size: int) -> bytes:
        while len(self._head) < size:
            more = self._raw.read(size - len(self._head))
            if not more:
                break
            self._head += more
        return self._head[:size]

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            data = self._raw.read(size)
        elif size is not None and 0 <= size <= len(self._head):
            data, self._head = self._head[:size], self._head[size:]
        else:
            rest = self._raw.read(-1 if size is None or size < 0 else size - len(self._head))
            data, self._head = self._head + rest, b""
        self._stats.bytes_read += len(data)
        return data


class TarHeaderTooLarge(tarfile.ReadError):
    """A member's extended header data (long name or link, pax records, sparse map) is larger
    than MAX_HEADER_BYTES: the shard is refused from there on, before the data is read."""


# Header members that carry data for the member after them, and what to call them.
_EXTENDED_HEADERS = {
    tarfile.GNUTYPE_LONGNAME: "GNU long-name header", tarfile.GNUTYPE_LONGLINK: "GNU long-link header",
    tarfile.XHDTYPE: "pax extended header", tarfile.SOLARIS_XHDTYPE: "pax extended header",
    tarfile.XGLTYPE: "pax global header", tarfile.GNUTYPE_SPARSE: "GNU sparse header",
}


class _HeaderBudget:
    """The shard stream while one member's extended headers are read: reads that would take
    the header bytes past the cap raise TarHeaderTooLarge before anything is read. tarfile reads
    headers only through ``read`` and ``tell``."""

    def __init__(self, raw, limit: int, what: str):
        self.raw = raw
        self.left = limit
        self.what = what

    def read(self, size: int) -> bytes:
        if size > self.left:
            raise TarHeaderTooLarge(
                f"{self.what}: more than {MAX_HEADER_BYTES} bytes of extended header data for one "
                f"member (the cap on long names, pax records and sparse maps)")
        data = self.raw.read(size)
        self.left -= len(data)
        return data

    def tell(self) -> int:
        return self.raw.tell()


def _global_pax_bytes(tar: tarfile.TarFile) -> int:
    return sum(len(k) + len(v) + 4 for k, v in tar.pax_headers.items())


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile takes a short or invalid header after the first one for the end of the archive, so
    a shard truncated or corrupted there would lose its remaining members without a word; here
    both are a ReadError. A zero block (the end-of-archive marker), or the data ending exactly
    between two members, still ends the archive, as it does for tar.

    Extended headers are bounded: tarfile reads the data a GNU long-name or pax header claims in
    one piece, and keeps global pax records for the rest of the archive. Here what one member's
    extended headers read, with the global records kept, is at most MAX_HEADER_BYTES; past it
    a TarHeaderTooLarge, raised before the claimed bytes are read."""

    @classmethod
    def fromtarfile(cls, tarfile_):
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as e:
            raise tarfile.ReadError(str(e)) from None

    def _proc_member(self, tarfile_):
        what = _EXTENDED_HEADERS.get(self.type)
        if what is None or isinstance(tarfile_.fileobj, _HeaderBudget):
            # A plain header, or one of a chain whose first member set up the budget.
            return super()._proc_member(tarfile_)
        what = f"{what} at tar offset {self.offset}" + (
            "" if self.type == tarfile.GNUTYPE_SPARSE else f" claims {self.size} bytes")
        tarfile_.fileobj = _HeaderBudget(tarfile_.fileobj, MAX_HEADER_BYTES - _global_pax_bytes(tarfile_),
                                         what)
        try:
            return super()._proc_member(tarfile_)
        finally:
            tarfile_.fileobj = tarfile_.fileobj.raw


def _open_tar(reader: _CountingReader) -> tarfile.TarFile:
    """Stream mode over a plain or gzip tar (told apart by the magic, as ``r|*`` does)."""
    head = reader.peek(6)
    for magic, name in _REFUSED_MAGIC.items():
        if head.startswith(magic):
            raise tarfile.ReadError(f"{name}-compressed shard: only plain and gzip tars are read")
    mode = "r|gz" if head.startswith(_GZIP_MAGIC) else "r|"
    return tarfile.open(fileobj=reader, mode=mode, tarinfo=_StrictTarInfo)


def _skip_to_next_header(tar: tarfile.TarFile) -> None:
    """Read up to the next header, failing at the end of the data. tarfile would seek there
    itself, but in stream mode its seek reads block after block up to the offset the header
    claims without noticing that the data ended: a member claiming 2**62 bytes spins for ever."""
    stream = tar.fileobj
    while (left := tar.offset - stream.tell()) > 0:
        if not stream.read(min(left, _SKIP_CHUNK)):
            raise tarfile.ReadError("unexpected end of data")


def _canonical_json(data: bytes) -> str | None:
    try:
        return json.dumps(json.loads(data.decode("utf-8")), sort_keys=True, ensure_ascii=False)
    except (UnicodeDecodeError, ValueError):
        return None


class _Sample:
    """The WebDataset sample being read: its sidecar, and the audio members held for it."""

    def __init__(self, key: str | None = None):
        self.key = key
        self.meta: str | None = None
        self.meta_seen = False           # its .json member was read (valid or not)
        self.held: list[tuple[int, str, bytes]] = []   # (member index, name, data)
        self.held_bytes = 0
        self.emitted_without_meta = 0    # audio yielded before the sidecar came

    def take(self) -> list[tuple[int, str, bytes]]:
        held, self.held, self.held_bytes = self.held, [], 0
        return held


class ShardReader:
    """Iterate the audio clips of one shard: ``for item in ShardReader(uri, open_fn): ...``.

    ``open_fn`` returns a fresh binary file object positioned at the start of
    the shard (the caller's storage layer retries the open itself). Items are
    :class:`ShardClip` or :class:`MemberProblem`; ``stats`` fills in as it goes.
    ``max_sample_bytes`` bounds the audio bytes held for one sample (see the module
    docstring); ``max_member_bytes`` is the hard cap on any one member.
    """

    def __init__(self, shard_uri: str, open_fn: Callable[[], BinaryIO],
                 policy: RetryPolicy = DEFAULT_POLICY, max_member_bytes: int = MAX_MEMBER_BYTES,
                 sleep: Callable[[float], None] = time.sleep,
                 max_sample_bytes: int = MAX_SAMPLE_BYTES):
        self.shard_uri = shard_uri
        self._open = open_fn
        self._policy = policy
        self._max_member_bytes = min(max_member_bytes, max_sample_bytes)
        self._max_sample_bytes = max_sample_bytes
        self._sleep = sleep
        self.stats = ShardStats()
        self._seen_audio: set[str] = set()
        self._done_members = 0       # members before the first member of the current sample
        self._emitted: set[int] = set()   # members of the current sample already yielded
        self._sample = _Sample()

    def __iter__(self) -> Iterator[ShardClip | MemberProblem]:
        failures = 0
        while True:
            try:
                raw = self._open()   # retried by the storage layer; a failure here is final
            except Exception as e:
                if is_machine_failure(e):   # the store, not the shard: the job fails
                    raise
                raise ShardReadError(self.shard_uri, self.stats, e) from e
            try:
                with raw:
                    yield from self._read(raw)
                return
            except Exception as e:   # the stream broke: resume if it looks transient
                if not is_transient(e):
                    if is_machine_failure(e):   # out of memory: never a row of the shard
                        raise
                    # Members read in full before the break keep their rows, those held for the
                    # last (perhaps incomplete) sample too; a resumed pass would read them again.
                    yield from self._release(self._sample)
                    raise ShardReadError(self.shard_uri, self.stats, e) from e
                failures += 1
                if failures >= self._policy.attempts:
                    raise StorageUnavailable(
                        f"{scrub_url(self.shard_uri)}: {_where(self.stats)}: the storage kept failing "
                        f"({failures} attempts; {type(e).__name__}: {e})") from e
                self.stats.resumed += 1
                self._sleep(self._policy.delay(failures - 1))

    def _read(self, raw: BinaryIO) -> Iterator[ShardClip | MemberProblem]:
        stats = self.stats
        index = 0
        sample = self._sample = _Sample()
        stats.bytes_read = 0          # this pass starts at byte 0 of the shard
        tar = _open_tar(_CountingReader(raw, stats))
        try:
            while True:
                if index:   # past the data of the member before, read or not
                    _skip_to_next_header(tar)
                member = tar.next()
                tar.members.clear()   # stream mode would otherwise keep every header seen
                if member is None:
                    break
                index += 1
                if index <= self._done_members:   # resuming: this sample was finished already
                    continue
                fresh = index > stats.members     # counted on the first pass only
                stats.members = max(stats.members, index)
                member_key, ext = webdataset_key(member.name)
                if member_key != sample.key:
                    yield from self._release(sample)
                    if index - 1 > self._done_members:   # a new sample, not a resumed pass's first
                        self._done_members = index - 1
                        self._emitted.clear()
                    sample = self._sample = _Sample(member_key)
                elif ext != "json" and not ext < "json":
                    # A member sorting after "json": in WebDataset's order (a sample's members
                    # sorted by extension) the sidecar can no longer come for what is held.
                    yield from self._release(sample)
                if index in self._emitted:        # resuming: yielded before the break
                    pass
                elif not member.isfile():   # directories, links, devices
                    stats.ignored += fresh
                elif is_audio_name(member.name):
                    stats.audio += fresh
                    yield from self._audio(tar, member, index, sample)
                elif ext == "json":
                    stats.sidecars += fresh
                    sample.meta = (_canonical_json(tar.extractfile(member).read())
                                   if member.size <= MAX_SIDECAR_BYTES else None)
                    sample.meta_seen = True
                    if fresh and sample.meta is None:
                        stats.sidecars_invalid += 1
                    if fresh and sample.emitted_without_meta:
                        stats.sidecars_late += 1
                    yield from self._release(sample)
                else:
                    stats.ignored += fresh
                stats.last_member = member.name
                stats.tar_offset = member.offset_data + _padded(member.size)
            yield from self._release(sample)
            self._done_members = index
        finally:
            tar.close()

    def _audio(self, tar: tarfile.TarFile, member: tarfile.TarInfo, index: int,
               sample: _Sample) -> Iterator[ShardClip | MemberProblem]:
        """Yield the member at once when its sample's sidecar was read, else hold it (bounded)."""
        problem = self._check_audio(member, sample)
        if problem is None and not sample.meta_seen and \
                sample.held_bytes + member.size > self._max_sample_bytes:
            problem = MemberProblem(
                member.name, "SampleTooLarge",
                f"sample {sample.key!r} already holds {sample.held_bytes} bytes of audio waiting for its "
                f".json sidecar (its members sort before 'json'); this member's {member.size} bytes "
                f"would take it past --max_sample_bytes {self._max_sample_bytes}")
        if problem is not None:
            self._emitted.add(index)
            yield problem
            return
        data = tar.extractfile(member).read()
        if sample.meta_seen:
            self._emitted.add(index)
            self._seen_audio.add(member.name)
            yield ShardClip(member_name=member.name, data=data, meta=sample.meta)
            return
        sample.held.append((index, member.name, data))
        sample.held_bytes += len(data)

    def _release(self, sample: _Sample) -> Iterator[ShardClip]:
        """The held clips, with the sample's sidecar if it was read."""
        for index, name, data in sample.take():
            self._emitted.add(index)
            self._seen_audio.add(name)
            if not sample.meta_seen:
                sample.emitted_without_meta += 1
            yield ShardClip(member_name=name, data=data, meta=sample.meta)

    def _check_audio(self, member: tarfile.TarInfo, sample: _Sample) -> MemberProblem | None:
        if member.name in self._seen_audio or any(member.name == name for _, name, _ in sample.held):
            return MemberProblem(member.name, "DuplicateMember",
                                 f"a member named {member.name!r} already appeared in this shard")
        if member.size > self._max_member_bytes:
            which = ("--max_sample_bytes" if self._max_member_bytes == self._max_sample_bytes
                     else "the largest member read")
            return MemberProblem(member.name, "MemberTooLarge",
                                 f"member is {member.size} bytes; the limit is {self._max_member_bytes} "
                                 f"({which})")
        return None


def _padded(size: int) -> int:
    return (size + tarfile.BLOCKSIZE - 1) // tarfile.BLOCKSIZE * tarfile.BLOCKSIZE
