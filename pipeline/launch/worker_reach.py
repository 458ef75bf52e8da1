"""What a runner's workers can reach: refuse, at launch, paths and credentials they would not get.

On the DirectRunner the workers are this machine's processes: they share its disk, its /tmp and
its environment. On every other runner (Flink, Spark, Dataflow, a portable job service with
external worker pools) they run elsewhere, so

* a local path (no scheme, ``file://``, or ``memory://``, which lives in one process) names
  the launcher's disk; workers would read nothing there, or write the tables onto their own
  disks where no one looks. ``--shared_filesystem`` says such paths are on storage every
  worker mounts at the same place (NFS, a cluster file system);
* credentials given on the command line (``--storage_options`` fields, ``--s3_access_key_id``
  ...) stay on the launcher: it keeps them out of the pipeline options on purpose (workers
  and runners log those), and its environment variables are not the workers'. Workers must
  have their own.

A runner whose SDK harness runs inside the launcher (``--environment_type LOOPBACK``) counts as
local.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  PortableOptions, StandardOptions)

from transforms.io.hub_models import is_hub_model
from transforms.io.storage import LOCAL_PROTOCOLS, protocol_of

# Runners whose workers are processes of the launching machine (Prism: Beam's local portable
# runner, which starts its SDK workers beside itself).
LOCAL_RUNNERS = frozenset({"directrunner", "bundlebaseddirectrunner", "switchingdirectrunner",
                           "prismrunner"})
# Protocols only this machine (or this process) can see.
MACHINE_LOCAL_PROTOCOLS = LOCAL_PROTOCOLS | {"memory"}
# Options holding paths the workers open, by the name users type.
WORKER_PATH_OPTIONS = ("input", "input_manifest", "output", "model", "skip_labelled")

CREDENTIALS_HELP = (
    "workers on {runner} do not get credentials given to the launcher (not in the pipeline "
    "options, not from its environment variables); give them to the workers: environment "
    "variables in the worker environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...), the "
    "cloud's instance identity or IAM role / workload identity, or a credentials file in the worker "
    "image, and keep them out of {flags}")


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    return runner if isinstance(runner, str) else type(runner).__name__


def workers_share_this_machine(options: PipelineOptions) -> bool:
    """True when the runner's workers are processes of this machine."""
    name = runner_name(options).rsplit(".", 1)[-1].lower()
    if name in LOCAL_RUNNERS or f"{name}runner" in LOCAL_RUNNERS:
        return True
    return (options.view_as(PortableOptions).environment_type or "").upper() == "LOOPBACK"


def is_machine_local(path: str) -> bool:
    return protocol_of(path) in MACHINE_LOCAL_PROTOCOLS


def local_worker_paths(options: PipelineOptions, opts) -> list[tuple[str, str]]:
    """(option, path) for each path the workers open that names this machine's storage."""
    found = []
    for name in WORKER_PATH_OPTIONS:
        value = getattr(opts, name, None)
        for path in (value if isinstance(value, list) else [value]):
            if path and is_machine_local(path) and not (name == "model" and is_hub_model(path)):
                found.append((name, path))
    temp = options.view_as(GoogleCloudOptions).temp_location
    if temp and is_machine_local(temp):
        found.append(("temp_location", temp))
    return found


def check_worker_reach(options: PipelineOptions, opts, credentials_flags: list[str]) -> str | None:
    """The one-line reason this launch cannot work on its runner, or None.
    ``credentials_flags``: the options that carried credentials on the command line."""
    if workers_share_this_machine(options):
        return None
    runner = runner_name(options)
    if not getattr(opts, "shared_filesystem", False):
        local = local_worker_paths(options, opts)
        if local:
            name, path = local[0]
            more = f" (and {len(local) - 1} more local path(s))" if len(local) > 1 else ""
            return (f"--{name} {path} is on this machine's disk, which {runner}'s workers cannot "
                    f"see{more}; use storage every worker reaches (s3://, gs://, ...), or add "
                    "--shared_filesystem if it is mounted at the same path on every worker")
    if credentials_flags:
        return CREDENTIALS_HELP.format(runner=runner, flags=" and ".join(credentials_flags))
    return None
