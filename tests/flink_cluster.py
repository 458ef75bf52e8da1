"""A real Flink session cluster on one machine for tests: a JobManager and ``taskmanagers``
TaskManagers, each a JVM of its own started by Flink's own scripts (``jobmanager.sh`` /
``taskmanager.sh start-foreground``, from the distribution tests/engine_dists.py fetches), and
external SDK worker pools. Each TaskManager and each pool runs in its own mount namespace with a
private /tmp (tests/portable_cluster.py): nothing of the job can rely on a /tmp shared with the
launcher or with another TaskManager.

The configuration is given as Flink's dynamic properties (``-D key=value``) on each command line,
over the distribution's own conf/, so every port is free and nothing is written into the shared
distribution. A restart strategy is configured (fixed delay, :data:`RESTART_ATTEMPTS` attempts) and
short heartbeats, so a TaskManager killed mid-job is noticed in seconds and the job restarts
(whole: failover strategy "full") on the TaskManagers left (each has ``slots`` slots: one TaskManager alone can run a job of
parallelism ``slots``).

Jobs reach the cluster the way users submit them: Beam's ``FlinkRunner`` with ``--flink_master``,
starting Beam's Flink job server from ``--flink_job_server_jar`` (:meth:`FlinkCluster.pipeline_args`).
"""
from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from dataclasses import dataclass, field

from tests.engine_dists import FlinkDist
from tests.portable_cluster import LocalCluster, _stop_group, private_tmp_argv
from tests.s3_server import free_ports

# Failover "full": a lost TaskManager restarts the whole job, one restart attempt. (With Flink's
# default, "region", it fails every failover region with a task on it, and each region's failure
# counts as one attempt: Beam's batch graph has a dozen, so a fixed-delay strategy of 10 attempts
# was used up by one lost TaskManager.)
FAILOVER = "full"
RESTART_ATTEMPTS = 3
RESTART_DELAY = "10s"   # longer than the heartbeat timeout: a restart must not go to the dead TaskManager
HEARTBEAT = {"heartbeat.interval": "1000", "heartbeat.timeout": "6000"}


@dataclass
class FlinkCluster(LocalCluster):
    dist: FlinkDist | None = None
    taskmanagers: int = 2
    slots: int = 2
    rpc_port: int = 0
    rest_port: int = 0
    started_taskmanagers: list = field(default_factory=list)   # process names, in start order

    @property
    def parallelism(self) -> int:
        return self.slots

    def _env(self, private: bool) -> dict:
        # A TaskManager's logs and pid file go to its private /tmp; its console is its log here.
        where = "/tmp" if private else self.workdir
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                "HOME": "/tmp/home" if private else os.environ.get("HOME", "/root"),
                "FLINK_HOME": self.dist.home, "FLINK_CONF_DIR": os.path.join(self.dist.home, "conf"),
                "FLINK_LOG_DIR": where, "FLINK_PID_DIR": where}

    def _common(self) -> dict:
        return {"jobmanager.rpc.address": "localhost", "jobmanager.rpc.port": str(self.rpc_port),
                **HEARTBEAT}

    @staticmethod
    def _dynamic(properties: dict) -> list[str]:
        return [arg for key, value in properties.items() for arg in ("-D", f"{key}={value}")]

    def start(self) -> "FlinkCluster":
        try:
            self.rpc_port, self.rest_port, *pool_ports = free_ports(2 + self.pools)
            jobmanager = self._popen("jobmanager", [
                os.path.join(self.dist.home, "bin", "jobmanager.sh"), "start-foreground",
                *self._dynamic({**self._common(),
                                "jobmanager.bind-host": "localhost",
                                "jobmanager.memory.process.size": "1000m",
                                "rest.address": "localhost", "rest.bind-address": "localhost",
                                "rest.port": str(self.rest_port),
                                "jobmanager.execution.failover-strategy": FAILOVER,
                                "restart-strategy.type": "fixed-delay",
                                "restart-strategy.fixed-delay.attempts": str(RESTART_ATTEMPTS),
                                "restart-strategy.fixed-delay.delay": RESTART_DELAY})],
                self._env(private=False))
            waits = self.start_pools(pool_ports)
            for index in range(self.taskmanagers):
                self.start_taskmanager(index)
            self._awaiter("jobmanager", self.rest_port, jobmanager, timeout=120)()
            for wait in waits:
                wait()
            self.wait_for_taskmanagers(self.taskmanagers)
        except BaseException:
            self.stop()
            raise
        return self

    def start_taskmanager(self, index: int) -> str:
        name = f"taskmanager{index}" + (f"-{len(self.started_taskmanagers)}"
                                        if f"taskmanager{index}" in self.started_taskmanagers else "")
        self._popen(name, private_tmp_argv([
            os.path.join(self.dist.home, "bin", "taskmanager.sh"), "start-foreground",
            *self._dynamic({**self._common(),
                            "taskmanager.host": "localhost", "taskmanager.bind-host": "localhost",
                            "taskmanager.numberOfTaskSlots": str(self.slots),
                            # Small JVMs (the machine is shared): the SDK workers do the work; the
                            # managed memory is what Flink's batch sorts (GroupByKey) use.
                            "taskmanager.memory.process.size": "1200m",
                            "taskmanager.memory.managed.size": "160m",
                            # Beam's batch graph has dozens of blocking results at once; each
                            # sort-shuffle partition takes 512 buffers by default, more than a
                            # small TaskManager holds: fewer, smaller buffers each.
                            "taskmanager.memory.network.min": "128m",
                            "taskmanager.memory.network.max": "128m",
                            "taskmanager.memory.segment-size": "8kb",
                            "taskmanager.network.sort-shuffle.min-buffers": "64",
                            "taskmanager.resource-id": name})]), self._env(private=True))
        self.started_taskmanagers.append(name)
        return name

    def kill_taskmanager(self, name: str) -> None:
        """SIGKILL the TaskManager's JVM (and anything in its process group): no shutdown, no
        goodbye to the JobManager, as when its machine dies."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        _stop_group(self.processes.pop(name))

    def rest(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://localhost:{self.rest_port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def wait_for_taskmanagers(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.rest("/overview")["taskmanagers"] == count:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} TaskManagers not registered after {timeout} s; "
                                   f"see {self.workdir}")
            time.sleep(0.5)

    def taskmanagers_of(self, job: str) -> set[str]:
        """Resource ids (our process names) of the TaskManagers running the job's tasks now."""
        found = set()
        for vertex in self.rest(f"/jobs/{job}")["vertices"]:
            for tm in self.rest(f"/jobs/{job}/vertices/{vertex['id']}/taskmanagers")["taskmanagers"]:
                if tm.get("status") in ("RUNNING", "DEPLOYING", "INITIALIZING"):
                    found.add(tm["taskmanager-id"])
        return found

    def jobs(self) -> list[dict]:
        return self.rest("/jobs/overview")["jobs"]

    def pipeline_args(self, pool: int = 0) -> list[str]:
        """Options that submit a job to this cluster, its SDK workers taken from pool ``pool``."""
        return ["--runner=FlinkRunner", f"--flink_master=localhost:{self.rest_port}",
                f"--flink_job_server_jar={self.dist.job_server_jar}",
                "--job_server_jvm_properties=-Xmx512m",
                f"--parallelism={self.parallelism}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.pool_ports[pool]}"]
