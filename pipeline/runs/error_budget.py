"""--max_error_fraction: a run whose inputs mostly failed is a failed run, not a published one.

A nightly job whose worker image cannot decode anything, or whose storage returns garbage,
still accounts for every input (all of them in the errors table) and would otherwise publish
that as a success. The launcher calls :func:`check_error_fraction` on the run's counts after
the accounting check and before the manifest is written: past the limit, nothing is published.
"""
from __future__ import annotations

DEFAULT_MAX_ERROR_FRACTION = 0.25


class ErrorFractionExceeded(RuntimeError):
    """More inputs than --max_error_fraction allows ended in the errors table."""


def check_error_fraction(counts: dict, max_fraction: float) -> None:
    """Raises :class:`ErrorFractionExceeded` when ``errored / discovered > max_fraction``.

    ``counts``: ``RunSummary.counts()`` (discovered, labelled, errored, skipped,
    errors_by_type as ``{"stage/ErrorType": n}``). A run that discovered nothing has no
    fraction (whether an empty run may publish is decided elsewhere); 1.0 never fails.
    """
    discovered, errored = counts["discovered"], counts["errored"]
    if discovered <= 0 or errored <= max_fraction * discovered:
        return
    by_type = ", ".join(f"{kind}: {n}" for kind, n in
                        sorted(counts.get("errors_by_type", {}).items(), key=lambda kv: (-kv[1], kv[0])))
    raise ErrorFractionExceeded(
        f"{errored} of {discovered} discovered inputs ({errored / discovered:.1%}) ended in the errors "
        f"table, more than --max_error_fraction {max_fraction:g} allows "
        f"({int(max_fraction * discovered)}); {counts.get('labelled', 0)} labelled, "
        f"{counts.get('skipped', 0)} skipped. Errors by stage/type: {by_type or 'none'}. "
        f"The run was not published (no manifest); its tables are left for inspection.")
