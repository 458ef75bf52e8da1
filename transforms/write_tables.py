"""Beam glue: write a table with Beam's Parquet sink, on any runner's workers.

Beam's file sinks reach storage through ``FileSystems``, which builds Beam's S3
filesystem from the pipeline options registered in the worker process
(``FileSystems.set_options``). Only ``sdk_worker_main`` registers them: the
DirectRunner's worker processes and SDK containers that boot through it. A
worker started by Beam's external worker pool
(``python -m apache_beam.runners.worker.worker_pool_main``, the usual
``--environment_type EXTERNAL`` set-up on Flink, Spark or the portable job
service) runs ``SdkHarness`` directly and never gets them, so the S3 filesystem
is built with ``None`` and fails ("Must provide one of client or options")
before writing a byte.

So the sink carries the filesystem settings it needs (the non-secret
``--s3_*`` options: endpoint, region, SSL, API version) and registers them in a
worker process that has none, before each of its steps (initialise, write a
bundle, finalise), whichever worker runs it. Credentials never travel with
it: Beam's S3 client then finds them the way boto3 always does, from the
worker's environment, config files or instance identity.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io import iobase
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, S3Options

# S3Options fields that configure the client without being credentials.
S3_SETTINGS = ("s3_endpoint_url", "s3_region_name", "s3_api_version", "s3_verify", "s3_disable_ssl")


def filesystem_settings(options: PipelineOptions) -> dict:
    """The non-secret filesystem options of a run, as a dictionary for the workers."""
    s3 = options.view_as(S3Options)
    return {name: getattr(s3, name) for name in S3_SETTINGS if getattr(s3, name) not in (None, False)}


def ensure_worker_filesystem_options(settings: dict) -> None:
    """Register ``settings`` as this process's filesystem options, unless the runner registered
    pipeline options here already (those are complete, and win)."""
    if FileSystems._pipeline_options is None:   # noqa: SLF001 - Beam keeps no public getter
        FileSystems.set_options(PipelineOptions.from_dictionary(dict(settings)))


class _SinkWithFilesystemOptions(iobase.Sink):
    """Delegates to a file-based sink after making sure this worker's filesystems are configured."""

    def __init__(self, sink, settings: dict):
        self.sink = sink
        self.settings = dict(settings)

    def _ready(self):
        ensure_worker_filesystem_options(self.settings)
        return self.sink

    # What WriteImpl reads of a sink besides its methods (Sink's class defaults would hide them).
    @property
    def num_shards(self):
        return getattr(self.sink, "num_shards", 0)

    @property
    def skip_if_empty(self):
        return self.sink.skip_if_empty

    @property
    def triggering_frequency(self):
        return self.sink.triggering_frequency

    @property
    def convert_fn(self):
        return getattr(self.sink, "convert_fn", None)

    def __getattr__(self, name):
        if name in ("sink", "settings") or name.startswith("__"):   # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.sink, name)

    def initialize_write(self):
        return self._ready().initialize_write()

    def open_writer(self, init_result, uid):
        return self._ready().open_writer(init_result, uid)

    def pre_finalize(self, init_result, writer_results):
        return self._ready().pre_finalize(init_result, writer_results)

    def finalize_write(self, init_result, writer_results, pre_finalize_result):
        return self._ready().finalize_write(init_result, writer_results, pre_finalize_result)

    def pre_finalize_windowed(self, init_result, writer_results, window=None):
        return self._ready().pre_finalize_windowed(init_result, writer_results, window)

    def finalize_windowed_write(self, init_result, writer_results, pre_finalize_result, w=None):
        return self._ready().finalize_windowed_write(init_result, writer_results,
                                                     pre_finalize_result, w)

    def display_data(self):
        return self.sink.display_data()


def carrying_filesystem_settings(write: beam.PTransform, settings: dict) -> beam.PTransform:
    """Any of Beam's file writes (``WriteToParquet``, ``WriteToText``, ...: a ``_sink`` that is a
    file-based sink) made to work on workers that were given no pipeline options."""
    write._sink = _SinkWithFilesystemOptions(write._sink, settings or {})
    return write


class WriteTable(beam.io.WriteToParquet):
    """``WriteToParquet`` whose sink works on workers that were given no pipeline options."""

    def __init__(self, file_path_prefix: str, schema, filesystem_settings: dict | None = None,
                 **kwargs):
        # Lists in the Parquet specification's form (list.element), which Spark, Trino and
        # Iceberg's name mapping expect; Beam's default writes pyarrow's legacy list.item.
        kwargs.setdefault("use_compliant_nested_type", True)
        super().__init__(file_path_prefix, schema, **kwargs)
        carrying_filesystem_settings(self, filesystem_settings or {})
