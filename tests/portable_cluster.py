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

:class:`LocalCluster` (processes, logs, pools, namespaces) is shared with the Flink and Spark test
clusters (tests/flink_cluster.py, tests/spark_cluster.py).
"""
from __future__ import annotations

import os
import shlex
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
    """Return once ``port`` accepts connections; raise if ``process`` exits or time runs out."""
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


def has_private_tmp(pid: int, launcher_path: str) -> bool:
    """True when process ``pid`` has a tmpfs of its own on /tmp, where ``launcher_path`` (a path
    under the launcher's /tmp) does not exist."""
    with open(f"/proc/{pid}/mounts") as f:
        tmpfs = any(line.split()[1:3] == ["/tmp", "tmpfs"] for line in f)
    return tmpfs and not os.path.exists(f"/proc/{pid}/root{launcher_path}")


def private_tmp_argv(argv: list[str]) -> list[str]:
    """``argv`` run in its own mount namespace with a fresh tmpfs on /tmp, HOME under it, from /tmp:
    the launcher's pytest folders (and anything else it put in /tmp) are not there."""
    script = ("mount -t tmpfs tmpfs /tmp && mkdir -p /tmp/home && cd /tmp && exec "
              + shlex.join(argv))
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script]


@dataclass
class LocalCluster:
    """Processes of one test cluster: each in its own process group, logging to
    ``<workdir>/<name>.log``, stopped together. Subclasses start the engine; this class starts
    the external SDK worker pools every engine here uses."""
    workdir: str                      # logs (on the launcher's disk; the pools never see it)
    worker_env: dict                  # the pools' whole environment, besides PATH/HOME/PYTHONPATH
    pools: int = 2
    pool_ports: list = field(default_factory=list)
    processes: dict = field(default_factory=dict)   # name -> Popen

    def _popen(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        os.makedirs(self.workdir, exist_ok=True)
        log_path = os.path.join(self.workdir, f"{name}.log")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[name] = process
        return process

    def _awaiter(self, name: str, port: int, process: subprocess.Popen, timeout: float = 60.0):
        return lambda: _wait_for_port(port, process, name,
                                      os.path.join(self.workdir, f"{name}.log"), timeout)

    def _start_pool(self, index: int, port: int):
        # The pool starts its workers with `python` from PATH: this interpreter's folder first.
        env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"]),
               "HOME": "/tmp/home", "XDG_CACHE_HOME": "/tmp/home/.cache", "TMPDIR": "/tmp",
               "PYTHONPATH": REPO, "LANG": "C.UTF-8", **self.worker_env}
        name = f"pool{index}"
        process = self._popen(name, private_tmp_argv([
            "python", "-m", "apache_beam.runners.worker.worker_pool_main",
            "--service_port", str(port)]), env)
        self.pool_ports.append(port)
        return self._awaiter(f"pool{index}", port, process)

    def start_pools(self, ports: list[int]) -> list:
        """Start one pool on each of ``ports``; returns one wait function per pool (call them once
        everything is started: each takes seconds to import Beam)."""
        return [self._start_pool(i, port) for i, port in enumerate(ports)]

    def pids(self, prefix: str) -> list[int]:
        """Process ids of the running processes named ``prefix...`` (unshare, sh and the engines'
        start scripts exec into the program: one process each)."""
        return [p.pid for name, p in self.processes.items()
                if name.startswith(prefix) and p.poll() is None]

    def pool_pids(self) -> list[int]:
        return self.pids("pool")

    def log(self, name: str) -> str:
        path = os.path.join(self.workdir, f"{name}.log")
        with open(path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            _stop_group(self.processes.pop(name))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class PortableCluster(LocalCluster):
    """Beam's Python job service and ``pools`` external worker pools."""
    job_port: int = 0

    def start(self) -> "PortableCluster":
        try:   # all started at once (each takes seconds to import Beam), then awaited
            job_port, *pool_ports = free_ports(1 + self.pools)   # distinct: taken together
            waits = [self._start_job_service(job_port)] + self.start_pools(pool_ports)
            for wait in waits:
                wait()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_job_service(self, port: int):
        self.job_port = port
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root"),
               "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
        process = self._popen("job_service", [
            sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
            "--port", str(self.job_port),
            "--staging_dir", os.path.join(self.workdir, "staging")], env)
        return self._awaiter("job_service", port, process)

    def pipeline_args(self, pool: int) -> list[str]:
        """Options that run a job on this cluster, its workers taken from pool number ``pool``."""
        return ["--runner=PortableRunner", f"--job_endpoint=localhost:{self.job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.pool_ports[pool]}"]
