"""One launcher per run id at a time: a lease file with an expiry in the output root.

``<output>/_runs/<run_id>/_LEASE.json`` names its holder (attempt, host, pid) and when it expires.
A launcher takes the lease before its attempt writes anything, renews it from a background
thread while the job runs, and removes it when it ends, whether the attempt succeeded or not. A
second launch of the run id while the lease is live is refused; a lease past its expiry (its
launcher died), or one whose launcher ran on this machine and has ended, is taken over, with a
warning.

Object stores offer no portable compare-and-swap (S3's conditional writes are not in every
S3-compatible store, nor in fsspec), so there taking the lease is write-then-verify: check that no
live lease exists, write ours, wait ``settle_seconds``, read it back. Of two launchers racing
for the same run id, the one whose write landed last reads its own token and proceeds; the other
reads a stranger's and is refused. That holds as long as the time between a launcher's check and
its write is shorter than the settle time (one small PUT, against two seconds by default). On a
local disk a fresh lease is an exclusive create, which is atomic.
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

from pipeline.runs.layout import lease_path

_LOG = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_SETTLE_SECONDS = 2.0


class LeaseHeldError(RuntimeError):
    """Another launcher holds the run id's lease."""


# Tokens of the leases this process holds now: a lease naming this host and process but not
# one of these was left by an earlier launch in this process that could not remove it.
_HELD: set[str] = set()


def _holder_is_gone(lease: dict) -> bool:
    """True when the lease's launcher ran on this machine and is no longer running: its lease is
    stale before its expiry (a launcher whose storage failed cannot remove its lease)."""
    if lease.get("host") != socket.gethostname() or not isinstance(lease.get("pid"), int):
        return False
    if lease["pid"] == os.getpid():
        return lease.get("token") not in _HELD
    try:
        os.kill(lease["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # alive, someone else's
        return False
    return False


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class RunLease:
    def __init__(self, output: str, run_id: str, holder: str, storage_options: dict | None = None,
                 seconds: float = DEFAULT_LEASE_SECONDS, settle_seconds: float = DEFAULT_SETTLE_SECONDS):
        self.run_id = run_id
        self.holder = holder
        self.seconds = seconds
        self.settle_seconds = settle_seconds
        self.token = secrets.token_hex(8)
        self.fs, self.path = fsspec.core.url_to_fs(lease_path(output, run_id), **(storage_options or {}))
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._local = "file" in protocols or "local" in protocols
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost = False

    def _body(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "token": self.token, "holder": self.holder,
                           "host": socket.gethostname(), "pid": os.getpid(),
                           "expires_at": (_now() + datetime.timedelta(seconds=self.seconds)).isoformat()},
                          indent=2).encode()

    def _read(self) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}   # unreadable: treated as expired

    @staticmethod
    def _live(lease: dict | None) -> bool:
        if not lease or "expires_at" not in lease or _holder_is_gone(lease):
            return False
        try:
            return datetime.datetime.fromisoformat(lease["expires_at"]) > _now()
        except (TypeError, ValueError):
            return False

    @staticmethod
    def _describe(lease: dict) -> str:
        return (f"attempt {lease.get('holder')} on {lease.get('host')} (pid {lease.get('pid')}), "
                f"lease valid until {lease.get('expires_at')}")

    def acquire(self) -> "RunLease":
        current = self._read()
        if self._live(current) and current.get("token") != self.token:
            raise LeaseHeldError(f"run id {self.run_id} is being run by another launcher: "
                                 f"{self._describe(current)}; wait for it to end or use another --run_id")
        if current:
            _LOG.warning("run %s: taking over an expired lease, or one whose launcher has ended (%s)",
                         self.run_id, self._describe(current))
        self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        _HELD.add(self.token)   # before the write: from then on the lease file may name us
        if self._local and not current:
            # A local disk has an atomic exclusive create: no settling needed.
            try:
                with open(self.path, "xb") as f:
                    f.write(self._body())
            except FileExistsError:
                return self._refuse(self._read() or {})
        else:
            self.fs.pipe_file(self.path, self._body())
            time.sleep(self.settle_seconds)
        after = self._read()
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
                self.check()
                self.fs.pipe_file(self.path, self._body())
            except LeaseHeldError as e:
                self.lost = True
                _LOG.error("%s", e)
                return
            except Exception as e:   # a storage hiccup: the next renewal may succeed before expiry
                _LOG.warning("run %s: renewing the lease failed (%s: %s)", self.run_id, type(e).__name__, e)

    def check(self) -> None:
        """Raise unless this launcher still holds the lease (before publishing)."""
        current = self._read()
        if not current or current.get("token") != self.token:
            raise LeaseHeldError(f"run id {self.run_id}: this launcher lost its lease"
                                 + (f" to {self._describe(current)}" if current else "")
                                 + "; not publishing")

    def release(self) -> None:
        _HELD.discard(self.token)
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            current = self._read()
            if current and current.get("token") == self.token:
                self.fs.rm_file(self.path)
        except Exception as e:   # it expires on its own
            _LOG.warning("run %s: could not remove the lease (%s: %s)", self.run_id, type(e).__name__, e)

    def __enter__(self) -> "RunLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
