"""The lakehouse: commit runs to Iceberg tables, read them back, and the readers' Iceberg source options."""
