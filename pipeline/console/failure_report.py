"""What the launcher prints when a finished job's run fails its checks and is not published.

The check's own message first (the error budget, nothing discovered, the accounting), then what
a user needs to act on it without opening Parquet files: the counts by stage and type, the
first few error rows (where, at which stage, why) and the attempt folder the run left, in
full, so it can be inspected or removed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.runs.summary import RunSummary
from transforms.io.storage import protocol_of

FIRST_ERRORS_SHOWN = 5
MESSAGE_CHARS = 300   # an error row's message holds up to 2000 characters; the console gets this


def where(url: str) -> str:
    """A folder as a user can find it: local paths absolute, URLs as they are."""
    return os.path.abspath(url) if protocol_of(url) in ("file", "local") and "://" not in url else url


def _short(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


@dataclass
class FailedRun:
    summary: RunSummary

    def render(self, message: str) -> str:
        s = self.summary
        lines = [f"error: {message}",
                 f"  counts: {s.discovered} discovered, {s.labelled} labelled, {s.errored} errored, "
                 f"{s.skipped} skipped"]
        by_type = sorted(s.counts()["errors_by_type"].items(), key=lambda kv: (-kv[1], kv[0]))
        if by_type:
            lines.append("  errors by stage/type: " + ", ".join(f"{kind}: {n}" for kind, n in by_type))
        try:
            rows = s.first_errors(FIRST_ERRORS_SHOWN)
        except Exception as e:   # the message above stands on its own
            rows = []
            lines.append(f"  (the error rows could not be read: {type(e).__name__}: {e})")
        if rows:
            lines.append(f"  first errors ({len(rows)} of {s.errored}):")
            lines.extend(f"    {r['source_uri']}  [{r['stage']}] {r['error_type']}: {_short(r['message'])}"
                         for r in rows)
        lines.append(f"  nothing published; the attempt's files are left in {where(s.attempt.root)}/")
        return "\n".join(lines)
