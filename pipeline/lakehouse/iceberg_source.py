"""The Iceberg source flags shared by ``pipeline.report`` and ``pipeline.evaluate``: read the label
tables from the catalog runs were committed to (``--iceberg_catalog``) instead of a run folder or
Parquet path. Beam-free; pyiceberg is imported only when the flags are used."""
from __future__ import annotations

import argparse

from pipeline.lakehouse.iceberg_commit import DEFAULT_NAMESPACE


def add_iceberg_source_arguments(parser: argparse.ArgumentParser, group, run_id_help: str,
                                 output_flags: tuple[str, ...] = ("--iceberg_output",)) -> None:
    """``--iceberg_catalog`` in the tool's mutually exclusive source ``group``; the flags that
    only make sense with it on ``parser``. ``output_flags``: the names of the output-root flag
    (``--output`` as in run_pipeline.py where the tool has no --output of its own)."""
    group.add_argument("--iceberg_catalog", default=None, metavar="NAME",
                       help="read the Iceberg tables <namespace>.{clips,errors} of this pyiceberg catalog "
                            "(.pyiceberg.yaml / PYICEBERG_CATALOG__<NAME>__*, or the embedded catalog of a "
                            "local output root) instead")
    parser.add_argument("--iceberg_namespace", default=None, metavar="NS",
                        help=f"with --iceberg_catalog: the tables' namespace (default {DEFAULT_NAMESPACE})")
    parser.add_argument("--run_id", default=None, help=f"with --iceberg_catalog: {run_id_help}")
    parser.add_argument(*output_flags, dest="iceberg_output", default=None, metavar="ROOT",
                        help="with --iceberg_catalog and no catalog configuration: the local output root "
                             "the runs wrote to (its embedded catalog <output>/_iceberg/catalog.db)")


def check_iceberg_source_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits with argparse's usage error when an Iceberg-only flag comes without --iceberg_catalog;
    fills in the namespace default."""
    if not args.iceberg_catalog:
        given = [f"--{name}" for name, value in (("iceberg_namespace", args.iceberg_namespace),
                                                 ("run_id", args.run_id), ("iceberg_output", args.iceberg_output))
                 if value is not None]
        if given:
            parser.error(f"{', '.join(given)}: only with --iceberg_catalog (they choose what to read from it)")
    args.iceberg_namespace = args.iceberg_namespace or DEFAULT_NAMESPACE


def open_source_catalog(args: argparse.Namespace):
    """The catalog the flags name (see pipeline/lakehouse/iceberg_read.py: open_catalog_for_reading)."""
    from pipeline.lakehouse.iceberg_read import open_catalog_for_reading

    return open_catalog_for_reading(args.iceberg_catalog, args.iceberg_output)
