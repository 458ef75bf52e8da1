"""Storage, input discovery, tar shards and checkpoint files: plain Python over fsspec, no Apache Beam."""
