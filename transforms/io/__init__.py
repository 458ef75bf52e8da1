"""Storage, input discovery, tar shards, checkpoint files and hub model ids: plain Python over fsspec, no Apache Beam."""
