"""The archive's vector index: per-run partitions of embeddings beside the tables, and search over them."""
