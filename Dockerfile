# Worker image for portable runners (Flink, Spark, PortableRunner) and Dataflow: Beam's Python 3.11
# SDK harness with this package installed, so workers need no --setup_file install at start.
#
#   docker build -t registry.example.com/audio-labelling-worker:0.1.0 .
#   docker build --build-arg EXTRAS="[gcp]" -t ...   # Dataflow: Beam's GCP extra + gcsfs
#   docker build --build-arg EXTRAS="[mindnlp]" -t ...   # only for --backend mindnlp
#
# Use it with --sdk_container_image (Dataflow) or --environment_type DOCKER
# --environment_config <image> (Flink, Spark, PortableRunner); see docs/usage.md, section 6.
# The base image's tag must follow the apache-beam pin in setup.py (tests/test_worker_image.py).
FROM apache/beam_python3.11_sdk:2.77.0

# MindSpore 2.7 cannot load once protobuf's upb backend is active, and the SDK harness imports
# protobuf at boot, before any of this package runs: the worker's environment must choose the
# pure-python backend.
ENV PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python

# The per-machine checkpoint cache (downloads verified by SHA-256; see transforms/io/checkpoint_cache.py).
ENV AUDIO_LABELLING_CACHE_DIR=/var/cache/audio-labelling

ARG EXTRAS=""
COPY setup.py run_pipeline.py /opt/audio-labelling/
COPY pipeline /opt/audio-labelling/pipeline
COPY transforms /opt/audio-labelling/transforms
COPY schemas /opt/audio-labelling/schemas
RUN pip install --no-cache-dir "/opt/audio-labelling${EXTRAS}" \
    && python -c "import transforms.mindspore_inference, mindspore" \
    && mkdir -p /var/cache/audio-labelling

# The image keeps Beam's entrypoint (/opt/apache/beam/boot), which starts the SDK harness.
