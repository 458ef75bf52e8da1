"""Reconcile an output root by hand: what every launch does first (pipeline/runs/reconcile.py).

    python -m pipeline.reconcile --output ROOT [--storage_options JSON]
        [--iceberg_catalog NAME [--iceberg_namespace NS]] [--failed_attempt_days 7] [--dry_run]

Brings the table folders (and the Iceberg tables, with --iceberg_catalog) in line with the runs'
manifests: files no manifest names are moved back into their attempt's folder or removed, tables
that committed an unpublished attempt are rolled back (or forward to the published one), and
attempts that never published are removed once untouched for --failed_attempt_days. Run ids
whose launcher still holds the lease are skipped and named. Exit code 0 when the root is in line
(or --dry_run found what to do), 1 when a run id could not be reconciled (skipped or failed),
2 on bad arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from pipeline.lakehouse.iceberg_commit import DEFAULT_NAMESPACE
from pipeline.runs.reconcile import FAILED_ATTEMPT_MAX_AGE, reconcile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.reconcile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the output root the runs were written to (path or URL)")
    parser.add_argument("--storage_options", default=None, metavar="JSON",
                        help="fsspec options as JSON, as for run_pipeline.py")
    parser.add_argument("--iceberg_catalog", default=None, metavar="NAME",
                        help="also bring this pyiceberg catalog's tables in line (as run_pipeline.py names it)")
    parser.add_argument("--iceberg_namespace", default=DEFAULT_NAMESPACE, metavar="NS")
    parser.add_argument("--failed_attempt_days", type=float, default=FAILED_ATTEMPT_MAX_AGE / 86400,
                        help="remove attempts that never published once their newest file is this many days "
                             "old by the store's clock (default %(default)g)")
    parser.add_argument("--dry_run", action="store_true", help="say what would be done; change nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = json.loads(args.storage_options) if args.storage_options else None
    except ValueError as e:
        parser.error(f"--storage_options is not JSON: {e}")
    if options is not None and not isinstance(options, dict):
        parser.error("--storage_options must be a JSON object")
    if args.failed_attempt_days < 0:
        parser.error("--failed_attempt_days must be at least 0")
    alignment = None
    if args.iceberg_catalog:
        from pipeline.lakehouse.iceberg_align import IcebergAlignment
        from pipeline.lakehouse.iceberg_read import IcebergReadError, open_catalog_for_reading

        try:
            catalog = open_catalog_for_reading(args.iceberg_catalog, args.output)
        except IcebergReadError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        alignment = IcebergAlignment(catalog, args.iceberg_namespace, args.output, options)
    report = reconcile(args.output, options, iceberg=alignment, max_age=args.failed_attempt_days * 86400,
                       dry_run=args.dry_run)
    print(report.render())
    return 1 if report.skipped or report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
