"""A real Spark standalone cluster on one machine for tests: a master and ``workers`` workers, each a
JVM of its own (``spark-class ...deploy.master.Master`` / ``...deploy.worker.Worker``, from the
Spark 3 distribution tests/engine_dists.py fetches), and external SDK worker pools. Each worker
(and the executors it starts) and each pool runs in its own mount namespace with a private /tmp
(tests/portable_cluster.py); a worker's work directory (the application's jars, its scratch
space) is on that private /tmp.

Jobs reach the cluster the way users submit them: Beam's ``SparkRunner`` with
``--spark_master_url``, starting Beam's Spark job server (the Spark driver) from
``--spark_job_server_jar`` (:meth:`SparkCluster.pipeline_args`).
"""
from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass

from tests.engine_dists import SparkDist
from tests.portable_cluster import LocalCluster, private_tmp_argv
from tests.s3_server import free_ports


@dataclass
class SparkCluster(LocalCluster):
    dist: SparkDist | None = None
    workers: int = 2
    cores_per_worker: int = 1
    master_port: int = 0
    ui_port: int = 0

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.master_port}"

    def _env(self, private: bool) -> dict:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                "HOME": "/tmp/home" if private else os.environ.get("HOME", "/root"),
                "SPARK_HOME": self.dist.home, "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_DAEMON_MEMORY": "512m", "SPARK_LOG_DIR": "/tmp" if private else self.workdir}

    def start(self) -> "SparkCluster":
        spark_class = os.path.join(self.dist.home, "bin", "spark-class")
        try:
            self.master_port, self.ui_port, *pool_ports = free_ports(2 + self.pools)
            master = self._popen("master", [
                spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                "--port", str(self.master_port), "--webui-port", str(self.ui_port)],
                self._env(private=False))
            waits = self.start_pools(pool_ports)
            self._awaiter("master", self.master_port, master, timeout=120)()
            for index in range(self.workers):
                self._popen(f"worker{index}", private_tmp_argv([
                    spark_class, "org.apache.spark.deploy.worker.Worker", self.master_url,
                    "--host", "127.0.0.1", "--cores", str(self.cores_per_worker),
                    "--memory", "1g", "--work-dir", "/tmp/work", "--webui-port", "0"]),
                    self._env(private=True))
            for wait in waits:
                wait()
            self.wait_for_workers(self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=10) as r:
            return json.loads(r.read())

    def wait_for_workers(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if sum(w["state"] == "ALIVE" for w in self.state()["workers"]) == count:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Spark workers not registered after {timeout} s; "
                                   f"see {self.workdir}")
            time.sleep(0.5)

    def pipeline_args(self, pool: int = 0) -> list[str]:
        """Options that submit a job to this cluster, its SDK workers taken from pool ``pool``.
        The job server is the Spark driver: it binds to loopback, and it puts Beam's Guava
        before Spark's own (an old Guava) on the executors, whose classpath starts with the
        worker's Spark jars."""
        return ["--runner=SparkRunner", f"--spark_master_url={self.master_url}",
                f"--spark_job_server_jar={self.dist.job_server_jar}",
                "--job_server_jvm_properties=-Xmx768m",
                "--job_server_jvm_properties=-Dspark.driver.host=127.0.0.1",
                "--job_server_jvm_properties=-Dspark.driver.bindAddress=127.0.0.1",
                "--job_server_jvm_properties=-Dspark.executor.memory=768m",
                # The workers share a host name here but not a disk (each has a private /tmp):
                # shuffle blocks must come over the network, as between machines, not be read
                # from "this host's" disk by path.
                "--job_server_jvm_properties=-Dspark.shuffle.readHostLocalDisk=false",
                f"--job_server_jvm_properties=-Dspark.executor.extraClassPath={self.dist.guava_jar}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.pool_ports[pool]}"]
