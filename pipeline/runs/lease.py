"""One launcher per run id at a time: a lease file with an expiry in the output root.

``<output>/_runs/<run_id>/_LEASE.json`` names its holder (attempt, and the process: host, boot id,
pid namespace, pid and process start) and how long it lasts. A launcher takes the lease before its
attempt writes anything, renews it from a background thread while the job runs, checks it before
each destructive step of its publication (``check``: the move, the table commits, the manifest
swap, the retirement) and removes it when it ends, whether the attempt succeeded or not.

**Expiry is judged by the store's clock**: a lease is live while its file's modification time
(set by the store when the holder last wrote it) is less than its ``seconds`` ago, "ago" being
the modification time of a probe the reader writes just then (pipeline/runs/store.py). Launchers
whose clocks disagree by minutes agree on expiry; the ``expires_at`` in the file is for people.
A lease past its expiry is taken over, with a warning. So is one whose holder is *gone*: a
process on this very machine (same host name, same boot id, same pid namespace) that no longer
runs (its pid is free, a zombie, or another process since started). Containers that share a host
name but not a pid namespace never judge each other's pids: there only expiry frees a lease.

A holder keeps its lease only while it renewed it recently: ``check`` refuses once less than a
third of the lease is left (the renewer writes it every third), and once the renewer found it
taken (``lost``). The renewer itself goes on renewing while the lease is still ours and not
expired, so one failed renewal costs a publication step its margin, not the lease; it writes the
lease whole (pipeline/runs/store.py ``put_whole``), so a reader never sees it empty. A launcher
that lost its lease publishes nothing and removes nothing but its own files (pipeline/main.py).

Object stores offer no portable compare-and-swap (S3's conditional writes are not in every
S3-compatible store, nor in fsspec), so there taking the lease is write-then-verify: check that no
live lease exists, write ours, wait ``settle_seconds``, read it back. Of two launchers racing
for the same run id, the one whose write landed last reads its own token and proceeds; the other
reads a stranger's and is refused. That holds as long as the time between a launcher's check and
its write is shorter than the settle time (one small PUT, against two seconds by default). On a
local disk a fresh lease is an exclusive create, which is atomic.

The lease lasts ``AUDIO_LABELLING_LEASE_SECONDS`` (default 300): after a launcher is killed, the
run id stays locked for up to that long (on another machine or container).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import socket
import threading
import time

import fsspec

from pipeline.runs import store
from pipeline.runs.layout import lease_path

_LOG = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_SETTLE_SECONDS = 2.0
LEASE_SECONDS_ENV = "AUDIO_LABELLING_LEASE_SECONDS"
# check() refuses once less than this share of the lease is left.
_CHECK_MARGIN = 1 / 3


def lease_seconds() -> float:
    """The lease duration: AUDIO_LABELLING_LEASE_SECONDS, else DEFAULT_LEASE_SECONDS."""
    value = os.environ.get(LEASE_SECONDS_ENV)
    if not value:
        return DEFAULT_LEASE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"{LEASE_SECONDS_ENV}={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"{LEASE_SECONDS_ENV} must be positive, got {value!r}")
    return seconds


class LeaseHeldError(RuntimeError):
    """Another launcher holds the run id's lease (or took it from this one)."""


# Tokens of the leases this process holds now: a lease naming this process but not one of
# these was left by an earlier launch in this process that could not remove it.
_HELD: set[str] = set()


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), so a
    pid reused by another process is told apart; None where /proc has no such process."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_identity() -> dict:
    """Who holds a lease, precisely enough to tell whether it still runs from the same machine."""
    return {"host": socket.gethostname(), "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
            "pid_namespace": _pid_namespace(), "pid": os.getpid(),
            "process_start": _process_start(os.getpid())}


def _holder_is_gone(lease: dict) -> bool:
    """True when the lease's launcher ran in this machine's pid namespace since its last boot and
    no longer runs. Anything less certain (another machine, another container sharing the host
    name, no /proc) is False: only expiry frees such a lease."""
    me = process_identity()
    if any(me[k] is None or lease.get(k) != me[k] for k in ("host", "boot_id", "pid_namespace")):
        return False
    pid = lease.get("pid")
    if not isinstance(pid, int):
        return False
    if pid == me["pid"] and lease.get("process_start") == me["process_start"]:
        return lease.get("token") not in _HELD
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return True
    state = stat.rsplit(")", 1)[-1].split()[:1]
    if state == ["Z"]:   # killed, not yet reaped by its parent
        return True
    return _process_start(pid) != lease.get("process_start")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class RunLease:
    def __init__(self, output: str, run_id: str, holder: str, storage_options: dict | None = None,
                 seconds: float | None = None, settle_seconds: float = DEFAULT_SETTLE_SECONDS):
        self.run_id = run_id
        self.holder = holder
        self.seconds = seconds if seconds is not None else lease_seconds()
        self.settle_seconds = settle_seconds
        self.token = secrets.token_hex(8)
        self.fs, self.path = fsspec.core.url_to_fs(lease_path(output, run_id), **(storage_options or {}))
        self.folder = self.path.rsplit("/", 1)[0]
        self._local = store.is_local(self.fs)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "token": self.token, "holder": self.holder,
                           **process_identity(), "seconds": self.seconds,
                           "expires_at": (_now() + datetime.timedelta(seconds=self.seconds)).isoformat()},
                          indent=2).encode()

    def _read(self) -> tuple[dict | None, float | None]:
        """The lease file's content and its modification time (the store's clock)."""
        info = store.file_info(self.fs, self.path)
        if info is None:
            return None, None
        try:
            return json.loads(self.fs.cat_file(self.path)), store.modified(info)
        except FileNotFoundError:
            return None, None
        except ValueError:
            return {}, store.modified(info)   # unreadable: judged by its age alone

    def _age(self, modified: float | None) -> float:
        """Seconds since the lease file was last written, by the store's clock."""
        if modified is None:
            return float("inf")
        return store.storage_now(self.fs, self.folder) - modified

    def _live(self, lease: dict | None, modified: float | None) -> bool:
        if lease is None or _holder_is_gone(lease):
            return False
        seconds = lease.get("seconds")
        seconds = float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else DEFAULT_LEASE_SECONDS
        return self._age(modified) < seconds

    @staticmethod
    def _describe(lease: dict) -> str:
        return (f"attempt {lease.get('holder')} on {lease.get('host')} (pid {lease.get('pid')}), "
                f"lease valid until about {lease.get('expires_at')}")

    def acquire(self) -> "RunLease":
        current, modified = self._read()
        if current is not None and current.get("token") != self.token and self._live(current, modified):
            raise LeaseHeldError(f"run id {self.run_id} is being run by another launcher: "
                                 f"{self._describe(current)}; wait for it to end or use another --run_id")
        if current is not None:
            _LOG.warning("run %s: taking over an expired lease, or one whose launcher has ended (%s)",
                         self.run_id, self._describe(current))
        self.fs.makedirs(self.folder, exist_ok=True)
        _HELD.add(self.token)   # before the write: from then on the lease file may name us
        if self._local and current is None:
            # A local disk has an atomic exclusive create: no settling needed.
            try:
                with open(self.path, "xb") as f:
                    f.write(self._body())
            except FileExistsError:
                return self._refuse(self._read()[0] or {})
        else:
            store.put_whole(self.fs, self.path, self._body())
            time.sleep(self.settle_seconds)
        after, _ = self._read()
        if not after or after.get("token") != self.token:
            return self._refuse(after or {})
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True,
                                         name=f"lease-{self.run_id}")
        self._renewer.start()
        return self

    def _refuse(self, other: dict):
        _HELD.discard(self.token)
        raise LeaseHeldError(f"run id {self.run_id} was taken by another launcher at the same "
                             f"moment: {self._describe(other)}")

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                # Still ours and not expired is enough to renew: a renewal that failed once (a
                # storage hiccup) leaves less than the publication steps' margin, not a lost lease.
                self.check(margin=0)
                # Written whole, so a reader never finds it empty (and judges it lost) meanwhile.
                store.put_whole(self.fs, self.path, self._body())
            except LeaseHeldError as e:
                self.lost = True
                _LOG.error("%s", e)
                return
            except Exception as e:   # a storage hiccup: the next renewal may succeed before expiry
                _LOG.warning("run %s: renewing the lease failed (%s: %s)", self.run_id, type(e).__name__, e)

    def check(self, margin: float = _CHECK_MARGIN) -> None:
        """Raise LeaseHeldError unless this launcher still holds the lease, with at least
        ``margin`` of it (a share; a third by default) left by the store's clock. Called before
        every destructive step; the renewer checks with margin 0 (ours and not expired). Once it
        raised (or the renewer found the lease taken) it raises for good."""
        if self.lost:
            raise LeaseHeldError(f"run id {self.run_id}: this launcher lost its lease; not publishing")
        current, modified = self._read()
        if not current or current.get("token") != self.token:
            self.lost = True
            raise LeaseHeldError(f"run id {self.run_id}: this launcher lost its lease"
                                 + (f" to {self._describe(current)}" if current else "")
                                 + "; not publishing")
        age = self._age(modified)
        if age > self.seconds * (1 - margin):
            self.lost = True
            raise LeaseHeldError(f"run id {self.run_id}: this launcher's lease was last renewed {age:.0f} s "
                                 f"ago (store's clock) of {self.seconds:g} s; another launcher may take it "
                                 "over, so not publishing")

    def release(self) -> None:
        _HELD.discard(self.token)
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            current, _ = self._read()
            if current and current.get("token") == self.token:
                self.fs.rm_file(self.path)
        except Exception as e:   # it expires on its own
            _LOG.warning("run %s: could not remove the lease (%s: %s)", self.run_id, type(e).__name__, e)

    def __enter__(self) -> "RunLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
