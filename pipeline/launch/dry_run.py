"""--dry_run: what a run would read, found the way the job finds it, without running the job.

The launcher has already checked the options, the model and the output by the time this runs;
here discovery runs in the launcher (transforms/io/sources.py, as the job's first step does),
and each source's size is asked of its store. Nothing is written (the output's write probe is
removed again) and no run id, lease or attempt folder is made.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from transforms.elements import DiscoveryRequest, InputError
from transforms.io.sources import Discovery, _name
from transforms.io.storage import Storage, resolve_storage_options
from transforms.io.url_secrets import scrub_url

FIRST_SHOWN = 5


def _kind(uri: str, kind: str) -> str:
    """'tar shard', or 'audio file (.wav)' by extension."""
    if kind == "shard":
        return "tar shard"
    name = _name(uri)
    return f"audio file ({'.' + name.rsplit('.', 1)[-1] if '.' in name else 'no extension'})"


@dataclass
class DryRunReport:
    model: str
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    bytes_by_kind: collections.Counter = field(default_factory=collections.Counter)
    first: list[str] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    unsized: int = 0            # sources whose store gave no size
    allow_empty: bool = False

    @property
    def sources(self) -> int:
        return sum(self.by_kind.values())

    def render(self) -> str:
        total = sum(self.bytes_by_kind.values())
        lines = [f"dry run: nothing was run or written. The model ({self.model}) and the options are fine.",
                 f"  would read {self.sources} source(s), {_size(total)}"
                 + (f" ({self.unsized} of unknown size)" if self.unsized else "") + ":"]
        for kind, n in sorted(self.by_kind.items()):
            lines.append(f"    {kind}: {n}, {_size(self.bytes_by_kind[kind])}")
        if self.first:
            lines.append(f"  first {len(self.first)}:")
            lines.extend(f"    {uri}" for uri in self.first)
        if self.errors:
            lines.append(f"  {len(self.errors)} input(s) would fail discovery (error rows):")
            lines.extend(f"    {scrub_url(e.source_uri)}  [{e.stage}] {e.error_type}: {e.message}"
                         for e in self.errors[:FIRST_SHOWN])
        if not self.sources:
            lines.append("  no audio file or shard was found: a run would publish nothing and exit 1"
                         + (" (--allow_empty: it would publish the empty run)" if self.allow_empty else
                            " (--allow_empty publishes such a run)"))
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def survey_inputs(opts, storage_options: dict, checkpoint) -> DryRunReport:
    """Discovers --input and --input_manifest as the job would, and sizes what it found."""
    storage = Storage(resolve_storage_options(storage_options))
    request = DiscoveryRequest(inputs=tuple(opts.input or ()),
                               manifests=tuple(getattr(opts, "input_manifest", None) or ()))
    report = DryRunReport(model=scrub_url(checkpoint.uri), allow_empty=bool(opts.allow_empty))
    for item in Discovery(storage, request):
        if isinstance(item, InputError):
            report.errors.append(item)
            continue
        kind = _kind(item.uri, item.kind)
        report.by_kind[kind] += 1
        if len(report.first) < FIRST_SHOWN:
            report.first.append(scrub_url(item.uri))
        try:
            fs, path = storage.fs_and_path(item.uri)
            report.bytes_by_kind[kind] += int(storage.retry(lambda: fs.size(path), item.uri) or 0)
        except Exception:   # a manifest entry that does not exist: the job gives it an error row
            report.unsized += 1
    return report
