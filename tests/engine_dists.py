"""The software of the test clusters (tests/flink_cluster.py, tests/spark_cluster.py), fetched from
package registries into a cache folder outside git, once per machine:

* Flink: the distribution that PyPI's ``apache-flink`` / ``apache-flink-libraries`` wheels carry
  (``pyflink/bin/jobmanager.sh``, ``taskmanager.sh``, ``lib/``), installed with ``pip --no-deps
  --target`` into its own folder: the wheels pin an old apache-beam, and nothing of them is
  imported, only the distribution inside is run.
* Spark: the distribution inside PyPI's ``pyspark`` 3.x wheel (``bin/spark-class``, ``jars/``), the
  same way (the project's own environment keeps pyspark 4 for the reader tests).
* Beam's job servers, resolved by ``mvn`` from Maven Central (cached in ~/.m2): the runner
  artifacts ``beam-runners-flink-1.19`` and ``beam-runners-spark-3`` with their dependencies
  (tests/job_servers/*.pom.xml), and a small jar whose manifest names their main class and
  classpath, so Beam's ``--flink_job_server_jar`` / ``--spark_job_server_jar`` start it with
  ``java -jar`` exactly as they start Beam's prebuilt job-server jar.

Why not the prebuilt ``beam-runners-{flink-1.19,spark-3}-job-server`` jars, and why Beam 2.62 on
the Java side while the Python SDK is 2.77: the registry these machines reach serves none of the
prebuilt job-server jars (every version answers "Could not find artifact"), and of the runner
artifacts only 2.62.0 and 2.70.0; 2.70.0 needs beam-runners-java-job-service 2.70.0, which it
does not serve (newest 2.65.0). 2.62.0 resolves whole. The Python SDK (2.77) and the 2.62 job
servers talk Beam's portable protocol (the Fn API and Job API); the tests run the whole pipeline
through them (README: "Versions run together").

``python -m tests.engine_dists`` fetches everything (.ci/run does, before the tests); the cluster
fixtures call :func:`flink` / :func:`spark`, which fetch what is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))

BEAM_JAVA_VERSION = "2.62.0"     # Beam's runner artifacts (see the docstring: why not 2.77.0)
FLINK_VERSION = "1.19.3"         # the Flink 1.19 line beam-runners-flink-1.19 is built for
PYSPARK_VERSION = "3.5.9"        # Spark 3 (Scala 2.12), what beam-runners-spark-3 runs on

FLINK_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
SPARK_MAIN = "org.apache.beam.runners.spark.SparkJobServerDriver"


def cache_dir() -> str:
    """Where the software goes. Not under /tmp: the TaskManagers and Spark workers run it from
    their own mount namespaces, whose /tmp is a private tmpfs."""
    path = os.path.realpath(os.environ.get("AUDIO_LABELLING_ENGINES_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "audio-labelling-engines"))
    if path == "/tmp" or path.startswith("/tmp/"):
        raise RuntimeError(f"AUDIO_LABELLING_ENGINES_DIR={path} is under /tmp, which the test "
                           "clusters' TaskManagers and workers do not see (each has a private "
                           "/tmp); choose a folder elsewhere")
    return path


@dataclass(frozen=True)
class FlinkDist:
    home: str              # FLINK_HOME: bin/, lib/, conf/
    job_server_jar: str    # for --flink_job_server_jar
    version: str = FLINK_VERSION


@dataclass(frozen=True)
class SparkDist:
    home: str              # SPARK_HOME: bin/spark-class, jars/
    job_server_jar: str    # for --spark_job_server_jar
    guava_jar: str         # Beam's Guava, put before Spark's on the executors (spark_cluster.py)
    version: str = PYSPARK_VERSION


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n"
                           f"{done.stdout[-4000:]}")


def _install_once(target: str, fill) -> str:
    """Fill ``target`` through ``fill(tmp)`` into a temporary sibling, then rename it into place,
    so an interrupted fetch never leaves a half folder that looks complete."""
    if os.path.isdir(target):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=os.path.dirname(target))
    try:
        fill(tmp)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _pip_target(package_specs: list[str], what: str):
    return lambda tmp: _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                             "--target", tmp, *package_specs], f"pip install {what}")


def _maven_jars(pom: str):
    def fill(tmp: str) -> None:
        if shutil.which("mvn") is None:
            raise RuntimeError("mvn not found: apt-get install maven (.ci/run does)")
        _run(["mvn", "-B", "-q", "-f", pom, f"-Dbeam.version={BEAM_JAVA_VERSION}",
              "dependency:copy-dependencies", "-DincludeScope=runtime",
              f"-DoutputDirectory={os.path.join(tmp, 'lib')}"], f"mvn ({os.path.basename(pom)})")
    return fill


def _manifest_jar(path: str, main_class: str, classpath: list[str]) -> None:
    """A jar holding only a manifest: ``java -jar`` runs ``main_class`` with ``classpath`` (paths
    relative to the jar's folder, in order: the first jar holding a class wins)."""
    def wrapped(line: str) -> str:   # manifest lines are at most 72 bytes; continuations start with a space
        out, rest = [line[:72]], line[72:]
        while rest:
            out.append(" " + rest[:71])
            rest = rest[71:]
        return "\r\n".join(out) + "\r\n"

    manifest = ("Manifest-Version: 1.0\r\n" + wrapped(f"Main-Class: {main_class}")
                + wrapped("Class-Path: " + " ".join(classpath)) + "\r\n")
    with zipfile.ZipFile(path, "w") as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest)


def _jars_in(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".jar"))


def flink() -> FlinkDist:
    root = cache_dir()
    dist = _install_once(os.path.join(root, f"flink-{FLINK_VERSION}"), _pip_target(
        [f"apache-flink=={FLINK_VERSION}", f"apache-flink-libraries=={FLINK_VERSION}"],
        f"apache-flink {FLINK_VERSION}"))
    server = _install_once(os.path.join(root, f"beam-{BEAM_JAVA_VERSION}-flink-1.19-job-server"),
                           _maven_jars(os.path.join(HERE, "job_servers", "flink.pom.xml")))
    jar = os.path.join(server, "job-server.jar")
    if not os.path.exists(jar):
        _manifest_jar(jar, FLINK_MAIN, [f"lib/{name}" for name in _jars_in(os.path.join(server, "lib"))])
    return FlinkDist(home=os.path.join(dist, "pyflink"), job_server_jar=jar)


def spark() -> SparkDist:
    root = cache_dir()
    dist = _install_once(os.path.join(root, f"pyspark-{PYSPARK_VERSION}"), _pip_target(
        [f"pyspark=={PYSPARK_VERSION}"], f"pyspark {PYSPARK_VERSION}"))
    home = os.path.join(dist, "pyspark")
    server = _install_once(os.path.join(root, f"beam-{BEAM_JAVA_VERSION}-spark-3-job-server"),
                           _maven_jars(os.path.join(HERE, "job_servers", "spark.pom.xml")))
    lib = os.path.join(server, "lib")
    guava = [name for name in _jars_in(lib) if name.startswith("guava-")]
    if len(guava) != 1:
        raise RuntimeError(f"expected one Guava jar among Beam's Spark job server jars, found {guava}")
    jar = os.path.join(server, "job-server.jar")
    if not os.path.exists(jar):
        # Beam's jars first: Spark's own Guava (14) lacks what Beam's dependencies call.
        spark_jars = os.path.relpath(os.path.join(home, "jars"), server)
        _manifest_jar(jar, SPARK_MAIN, [f"lib/{name}" for name in _jars_in(lib)]
                      + [f"{spark_jars}/{name}" for name in _jars_in(os.path.join(home, "jars"))])
    return SparkDist(home=home, job_server_jar=jar, guava_jar=os.path.join(lib, guava[0]))


def main() -> int:
    for fetch in (flink, spark):
        print(f"{fetch.__name__}: {fetch()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
