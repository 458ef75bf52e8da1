"""The launcher's logging: the project's own lines at the chosen level, other libraries' noise held back.

Importing Apache Beam logs ``WARNING:root:apitools not found...`` through the root logger, and
``logging.warning`` at module level configures the root logger (``basicConfig``, level WARNING)
when nothing has yet: after that a later ``basicConfig(level=INFO)`` does nothing and the
project's INFO lines (progress, model load, publication) never show. So the console handler is
installed before Beam is imported (run_pipeline.py calls :func:`configure_logging` first), and
the levels are set on the project's own loggers, not on the root: whatever handler the root has,
records of the project's loggers reach it at their own level.

Lines of the project are those of the loggers named in :data:`PROJECT_LOGGERS`; everything else
(Beam, MindSpore's Python logger, grpc, fsspec, ...) shows from WARNING up, or from INFO with
``--log_level DEBUG``. MindSpore's own C++ and Python logs are set through its GLOG variables
(transforms/model/runtime_env.py).
"""
from __future__ import annotations

import json
import logging
import sys

from transforms.model.runtime_env import quiet_mindspore_logs

PROJECT_LOGGERS = ("audio_labelling", "pipeline", "transforms", "schemas")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LEVEL = "INFO"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "audio_labelling.console"

# Warnings other libraries log at import about features this job never uses: (logger, start of
# the message). Beam's BigQuery client stubs warn on every import without Google's apitools.
KNOWN_NOISE = (("root", "apitools not found"),)


class DropKnownNoise(logging.Filter):
    """Drops the records of :data:`KNOWN_NOISE` (and nothing else)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        return not any(record.name == name and message.startswith(start) for name, start in KNOWN_NOISE)


def console_handler() -> logging.Handler | None:
    """The handler :func:`configure_logging` installed on the root logger, if any."""
    return next((h for h in logging.getLogger().handlers if h.get_name() == _HANDLER_NAME), None)


def configure_logging(level: str = DEFAULT_LEVEL) -> None:
    """Idempotent. ``level``: the project's lines from this level up (one of :data:`LEVELS`)."""
    level = level.upper()
    root = logging.getLogger()
    if console_handler() is None and not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(DropKnownNoise())
        root.addHandler(handler)
    # Other libraries: warnings and errors; their INFO lines only when debugging the project.
    root.setLevel(logging.INFO if level == "DEBUG" else logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.INFO if level == "DEBUG" else logging.WARNING)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    quiet_mindspore_logs(verbose=level == "DEBUG")


# Beam's own lines in its SDK workers that read like faults and are none: the worker's notice
# that no main session was staged (this job pickles none) and its list of the options it does
# not know (ours, before the job's modules are loaded).
_WORKER_NOTICES = ("__main__", "apache_beam.runners.worker.sdk_worker_main",
                   "apache_beam.options.pipeline_options")


# The level names both harnesses read: these options also reach Java (Flink's and Spark's job
# servers parse them into SdkHarnessOptions, whose LogLevel enum has WARN, not WARNING, and no
# CRITICAL; a name it cannot parse fails the job's submission with a bare INTERNAL error), and
# Python's harness takes WARN as well.
_HARNESS_LEVEL = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}


def worker_log_args(level: str, argv: list[str]) -> list[str]:
    """Beam options that give SDK workers (the DirectRunner's multi_processing workers, portable,
    Flink and Dataflow workers) the launcher's logging: the project's lines at ``level``, other
    libraries' from WARNING up (INFO with DEBUG). A user who gave either of Beam's two options
    has taken the workers' logging in hand: nothing is added then."""
    level = level.upper()
    given = " ".join(argv)
    if "--default_sdk_harness_log_level" in given or "--sdk_harness_log_level_overrides" in given:
        return []
    args = [f"--default_sdk_harness_log_level={'INFO' if level == 'DEBUG' else 'WARN'}"]
    overrides = {name: _HARNESS_LEVEL.get(level, level) for name in PROJECT_LOGGERS}
    if level != "DEBUG":
        overrides.update({name: "ERROR" for name in _WORKER_NOTICES})
    args.append(f"--sdk_harness_log_level_overrides={json.dumps(overrides)}")
    return args
