"""A run's life on storage: layout, lease, publication and manifest, summary, table files, timings, error budget."""
