"""A small Beam cluster on one machine for tests: Beam's Python job service and external SDK worker
pools (``apache_beam.runners.worker.worker_pool_main``), each pool in its own mount namespace with
a private tmpfs on /tmp, its own HOME and working directory there, and only the environment a
cluster's worker would have (given explicitly, never inherited from the test process).

So a pool's workers cannot see the launcher's pytest folders (they live under /tmp), its
environment variables, or anything it wrote to /tmp: they reach inputs, model and output the way
workers on other machines do, through shared storage.

Needs root (or CAP_SYS_ADMIN) for ``unshare -m`` and ``mount``; :func:`namespaces_available` says
whether this machine allows it.

What Beam's Python job service does with several pools: it runs each job with one SDK worker per
environment (its FnApiRunner is built with ``num_workers`` 1 and ignores ``--direct_num_workers``),
and ``--environment_config`` names one pool, so one job uses one pool. Every pool is used by
pointing runs at it in turn (:meth:`PortableCluster.pipeline_args`).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from tests.s3_server import free_ports

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def namespaces_available() -> bool:
    """True where this process may give a child a private mount namespace with its own /tmp."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /tmp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def _wait_for_port(port: int, process: subprocess.Popen, what: str, log: str,
                   timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not listening on port {port} after {timeout} s; see {log}")
        time.sleep(0.2)


def _stop_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group this process leads (the pool and the workers it started), then
    SIGKILL whatever is left after ``grace`` seconds."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:   # the leader may be gone while its workers still run
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=15)


@dataclass
class PortableCluster:
    workdir: str                      # logs (on the launcher's disk; the pools never see it)
    worker_env: dict                  # the pools' whole environment, besides PATH/HOME/PYTHONPATH
    pools: int = 2
    job_port: int = 0
    pool_ports: list = field(default_factory=list)
    processes: list = field(default_factory=list)

    def start(self) -> "PortableCluster":
        os.makedirs(self.workdir, exist_ok=True)
        try:   # all started at once (each takes seconds to import Beam), then awaited
            job_port, *pool_ports = free_ports(1 + self.pools)   # distinct: taken together
            waits = [self._start_job_service(job_port)] + [
                self._start_pool(i, port) for i, port in enumerate(pool_ports)]
            for wait in waits:
                wait()
        except BaseException:
            self.stop()
            raise
        return self

    def _popen(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log_path = os.path.join(self.workdir, f"{name}.log")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(process)
        return process

    def _start_job_service(self, port: int):
        self.job_port = port
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"),
               "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
        process = self._popen("job_service", [
            sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
            "--port", str(self.job_port),
            "--staging_dir", os.path.join(self.workdir, "staging")], env)
        return lambda: _wait_for_port(self.job_port, process, "job service",
                                      os.path.join(self.workdir, "job_service.log"))

    def _start_pool(self, index: int, port: int):
        # The pool starts its workers with `python` from PATH: this interpreter's folder first.
        env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
               "HOME": "/tmp/home", "XDG_CACHE_HOME": "/tmp/home/.cache", "TMPDIR": "/tmp",
               "PYTHONPATH": REPO, "LANG": "C.UTF-8", **self.worker_env}
        # A private /tmp: the launcher's pytest folders (and anything else it put in /tmp) vanish.
        script = ("mount -t tmpfs tmpfs /tmp && mkdir -p /tmp/home && cd /tmp && "
                  f"exec python -m apache_beam.runners.worker.worker_pool_main --service_port {port}")
        process = self._popen(f"pool{index}", [
            "unshare", "-m", "--propagation", "private", "sh", "-c", script], env)
        self.pool_ports.append(port)
        return lambda: _wait_for_port(port, process, f"worker pool {index}",
                                      os.path.join(self.workdir, f"pool{index}.log"))

    def pipeline_args(self, pool: int) -> list[str]:
        """Options that run a job on this cluster, its workers taken from pool number ``pool``."""
        return ["--runner=PortableRunner", f"--job_endpoint=localhost:{self.job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.pool_ports[pool]}"]

    def pool_pids(self) -> list[int]:
        """Process ids of the running pools (unshare and sh exec into the pool: one process)."""
        return [p.pid for p in self.processes[1:] if p.poll() is None]

    def log(self, name: str) -> str:
        path = os.path.join(self.workdir, f"{name}.log")
        with open(path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        for process in reversed(self.processes):
            _stop_group(process)
        self.processes.clear()

    def __enter__(self) -> "PortableCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
