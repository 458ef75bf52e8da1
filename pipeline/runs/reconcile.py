"""Repair what earlier launchers left in an output root: one recovery rule for every kill and failure.

Every launch reconciles its output root before its job (pipeline/main.py); ``python -m
pipeline.reconcile --output ROOT`` does the same by hand. The rule, per run id, holds once the
run's lease is free (expired by the store's clock, or its launcher gone; a run id whose lease
is live is skipped, its launcher is still at work):

* **The manifests are the truth.** A run is published as its ``_MANIFEST.json`` says, nothing else.
* **Iceberg follows the manifests** (``--iceberg_catalog``; pipeline/lakehouse/iceberg_align.py):
  a table whose files for the run differ from the manifest's is committed back to them (rolled
  back when an attempt was committed but never published, forward when a published attempt is
  missing). This happens first, so no table ever points at a file about to be moved. Without
  ``--iceberg_catalog``, an attempt whose launcher marked it ``_ICEBERG.json`` (written before
  its first table commit) and never published is left as it is, its files in the table folders
  where the catalog may point at them: the run is reported skipped, needing that catalog.
* **Table folders hold only files some manifest names.** A file of
  ``<table>/run_id=<id>/`` that the run's manifest does not name is moved back into its attempt's
  folder (``_runs/<id>/<attempt>/<table>/``) when that attempt was never published (a launcher
  killed while moving or before its manifest), and removed when the manifest names a later
  attempt (a retirement that was cut short) or the name carries no attempt id.
* **Attempt folders:** one older than the published attempt is removed (the retirement's work);
  one that never published is kept for inspection until its newest file is FAILED_ATTEMPT_MAX_AGE
  old (7 days, by the store's clock), then removed. The published attempt's folder (its
  statistics) is never removed, nor the attempt of the launcher reconciling.

Each removal and move is done under the run id's lease, checked before each step, on exact paths
(pipeline/runs/store.py). A launcher killed in the middle of a reconciliation leaves work the
next one finishes: every step moves the root closer to the rule, none undoes another.
"""
from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field

import fsspec

from pipeline.runs import store
from pipeline.runs.layout import (
    ATTEMPT_ID, ICEBERG_MARKER_NAME, LEASE_NAME, MANIFEST_NAME, PARTITION_KEY, RUNS_DIR, TABLE_NAMES,
    attempt_of_file, is_run_id)
from pipeline.runs.lease import DEFAULT_SETTLE_SECONDS, LeaseHeldError, RunLease
from pipeline.runs.publish import read_manifest

_LOG = logging.getLogger(__name__)

FAILED_ATTEMPT_MAX_AGE = 7 * 24 * 3600.0
# Small files a killed launcher can leave beside a manifest (clock probes, a manifest or a lease
# being written): removed once this old.
_LEFTOVER_AGE = 3600.0
_LEFTOVER_PREFIXES = ("_CLOCK-", f"{MANIFEST_NAME}.tmp-", f"{LEASE_NAME}.tmp-")


@dataclass
class RunOnStore:
    """One run id as the store holds it."""
    run_id: str
    manifest: dict | None = None
    attempts: dict[str, float | None] = field(default_factory=dict)   # id -> newest file's mtime
    table_files: list[tuple[str, str]] = field(default_factory=list)   # (table, path)
    leftovers: dict[str, float | None] = field(default_factory=dict)   # path -> mtime
    iceberg: dict[str, dict] = field(default_factory=dict)   # attempt -> its _ICEBERG.json marker
    unreadable: str | None = None

    def listed(self, root: str) -> set[str]:
        files = (self.manifest or {}).get("files") or {}
        return {f"{root}/{p}" for paths in files.values() for p in paths}


@dataclass(frozen=True)
class Step:
    kind: str          # "move back", "remove file", "remove attempt"
    path: str
    dest: str | None = None
    why: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.path}" + (f" -> {self.dest}" if self.dest else "") + f" ({self.why})"


@dataclass
class ReconcileReport:
    done: dict[str, list[str]] = field(default_factory=dict)       # run id -> steps taken
    planned: dict[str, list[str]] = field(default_factory=dict)    # dry run: what would be done
    skipped: dict[str, str] = field(default_factory=dict)          # run id -> why (lease held)
    missing: dict[str, list[str]] = field(default_factory=dict)    # files a manifest names, absent
    failed: dict[str, str] = field(default_factory=dict)           # run id -> error
    foreign: list[str] = field(default_factory=list)               # not ours: left alone

    def render(self) -> str:
        lines = []
        for title, entries in (("reconciled", self.done), ("would reconcile", self.planned)):
            for run_id, steps in entries.items():
                lines.append(f"{title} run {run_id}:")
                lines += [f"  {s}" for s in steps]
        lines += [f"skipped run {r}: {why}" for r, why in self.skipped.items()]
        lines += [f"run {r}: its manifest names {len(ps)} missing file(s), e.g. {ps[0]}"
                  for r, ps in self.missing.items()]
        lines += [f"failed to reconcile run {r}: {e}" for r, e in self.failed.items()]
        lines += [f"left alone (not this pipeline's layout): {p}" for p in self.foreign[:20]]
        return "\n".join(lines) or "nothing to reconcile"


def _fs(output: str, storage_options: dict | None):
    fs, root = fsspec.core.url_to_fs(output, **(storage_options or {}))
    return fs, root.rstrip("/")


def survey(output: str, storage_options: dict | None = None, only: str | None = None,
           foreign: list[str] | None = None) -> dict[str, RunOnStore]:
    """Every run id under ``output`` (or just ``only``) with its manifest, attempt folders, table
    files and leftovers: one prefix listing of ``_runs/`` and of each table (or of the run's
    folders), plus one read per manifest."""
    fs, root = _fs(output, storage_options)
    runs: dict[str, RunOnStore] = {}
    foreign = foreign if foreign is not None else []

    def run(run_id: str) -> RunOnStore:
        return runs.setdefault(run_id, RunOnStore(run_id))

    runs_dir = f"{root}/{RUNS_DIR}"
    where = f"{runs_dir}/{only}" if only else runs_dir
    for relative, info in store.files_below(fs, where).items():
        parts = ([only] if only else []) + relative.split("/")
        if len(parts) < 2 or not is_run_id(parts[0]):
            continue   # probes of the root's clock, names that are no run id: not ours to judge
        state = run(parts[0])
        if len(parts) == 2 and parts[1].startswith(_LEFTOVER_PREFIXES):
            state.leftovers[f"{runs_dir}/{'/'.join(parts)}"] = store.modified(info)
        elif len(parts) > 2 and ATTEMPT_ID.fullmatch(parts[1]):
            stamp, newest = store.modified(info), state.attempts.get(parts[1])
            state.attempts[parts[1]] = stamp if newest is None else max(newest, stamp or newest)
            if len(parts) == 3 and parts[2] == ICEBERG_MARKER_NAME:
                try:
                    marker = json.loads(fs.cat_file(f"{runs_dir}/{'/'.join(parts)}"))
                except FileNotFoundError:   # removed meanwhile, with its attempt
                    continue
                except ValueError:   # unreadable: some catalog may still point at the files
                    marker = None
                state.iceberg[parts[1]] = marker if isinstance(marker, dict) else {}
    for table in TABLE_NAMES:
        folder = f"{root}/{table}"
        if only:
            found = {f"{PARTITION_KEY}={only}/{n}": i for n, i in
                     store.children(fs, f"{folder}/{PARTITION_KEY}={only}").items()}
        else:
            found = store.files_below(fs, folder)
        for relative, info in found.items():
            parts = relative.split("/")
            value = parts[0][len(PARTITION_KEY) + 1:] if parts[0].startswith(f"{PARTITION_KEY}=") else None
            if len(parts) != 2 or not is_run_id(value) or info.get("type") == "directory":
                foreign.append(f"{folder}/{relative}")
                continue
            run(value).table_files.append((table, f"{folder}/{relative}"))
    if only:
        run(only)
    for state in runs.values():
        try:
            state.manifest = read_manifest(output, state.run_id, storage_options)
        except ValueError as e:   # not JSON: nobody can tell what it published; left for a person
            state.unreadable = f"its {MANIFEST_NAME} is unreadable ({e})"
    return runs


def needs_catalog(state: RunOnStore, root: str) -> dict[str, dict]:
    """Attempts whose files an Iceberg catalog may still point at: never published (nor older than
    the published attempt), marked ``_ICEBERG.json`` (their launcher was about to commit them),
    with files in the table folders that no manifest names. Attempt -> its marker."""
    published = (state.manifest or {}).get("attempt")
    listed = state.listed(root)
    in_tables = {attempt_of_file(p.rsplit("/", 1)[-1]) for _, p in state.table_files if p not in listed}
    return {a: marker for a, marker in state.iceberg.items()
            if a in in_tables and (published is None or a > published)}


def plan(state: RunOnStore, root: str, now: float, max_age: float = FAILED_ATTEMPT_MAX_AGE,
         keep_attempts: frozenset[str] | set[str] = frozenset(), without_iceberg: bool = False) -> list[Step]:
    """The steps that bring one run id in line with the rule (module docstring); read-only.
    ``without_iceberg``: no catalog is being aligned, so an attempt that may be in one
    (``needs_catalog``) is left as it is, its table files and its folder."""
    if without_iceberg:
        keep_attempts = set(keep_attempts) | set(needs_catalog(state, root))
    published = (state.manifest or {}).get("attempt")
    runs_dir = f"{root}/{RUNS_DIR}/{state.run_id}"
    removed_attempts = {}
    for attempt, newest in sorted(state.attempts.items()):
        if attempt == published or attempt in keep_attempts:
            continue
        if published is not None and attempt < published:
            removed_attempts[attempt] = f"superseded by the published attempt {published}"
        elif newest is not None and now - newest > max_age:
            removed_attempts[attempt] = f"never published, untouched for {(now - newest) / 86400:.1f} days"
    steps = []
    listed = state.listed(root)
    for table, path in sorted(state.table_files):
        if path in listed:
            continue
        name = path.rsplit("/", 1)[-1]
        attempt = attempt_of_file(name)
        if attempt in keep_attempts:
            continue
        if attempt is None:
            steps.append(Step("remove file", path, why="no manifest names it and it carries no attempt id"))
        elif attempt == published or (published is not None and attempt < published):
            steps.append(Step("remove file", path, why=f"left over from attempt {attempt}, superseded"))
        elif attempt in removed_attempts:
            steps.append(Step("remove file", path, why=f"of attempt {attempt}: {removed_attempts[attempt]}"))
        else:
            steps.append(Step("move back", path, dest=f"{runs_dir}/{attempt}/{table}/{name}",
                              why=f"attempt {attempt} was never published"))
    steps += [Step("remove attempt", f"{runs_dir}/{a}", why=why) for a, why in removed_attempts.items()]
    steps += [Step("remove file", p, why="left by a killed launcher") for p, stamp in sorted(state.leftovers.items())
              if stamp is not None and now - stamp > _LEFTOVER_AGE]
    return steps


def _apply(fs, step: Step) -> None:
    if step.kind == "move back":
        store.move_file(fs, step.path, step.dest)
    elif step.kind == "remove file":
        store.remove_file(fs, step.path)
    elif step.kind == "remove attempt":
        store.remove_tree(fs, step.path)
    else:
        raise ValueError(step.kind)


def reconcile(output: str, storage_options: dict | None = None, *, iceberg=None,
              held: dict[str, RunLease] | None = None, keep_attempts: set[str] | frozenset[str] = frozenset(),
              max_age: float = FAILED_ATTEMPT_MAX_AGE, dry_run: bool = False,
              settle_seconds: float = DEFAULT_SETTLE_SECONDS) -> ReconcileReport:
    """Apply the rule to every run id under ``output``. ``iceberg``: an IcebergAlignment
    (pipeline/lakehouse/iceberg_align.py) for the tables to bring in line too. ``held``: leases
    the caller holds (the launcher's own run id), used instead of taking them. ``keep_attempts``:
    attempts never to touch (the caller's own). ``dry_run``: report the steps, take none."""
    report = ReconcileReport()
    held = held or {}
    fs, root = _fs(output, storage_options)
    runs = survey(output, storage_options, foreign=report.foreign)
    in_iceberg = iceberg.run_ids() if iceberg is not None else set()
    now = store.storage_now(fs, f"{root}/{RUNS_DIR}")
    if not dry_run:
        # Clock probes of this very folder that a killed process left: nobody's run, no lease needed.
        for name, info in store.children(fs, f"{root}/{RUNS_DIR}").items():
            stamp = store.modified(info)
            if name.startswith("_CLOCK-") and info.get("type") == "file" and stamp and now - stamp > _LEFTOVER_AGE:
                store.remove_file(fs, info["name"])
    for run_id in sorted(set(runs) | {r for r in in_iceberg if is_run_id(r)}):
        state = runs.get(run_id) or survey(output, storage_options, only=run_id)[run_id]
        if state.unreadable:
            report.failed[run_id] = state.unreadable
            continue
        present = {p for _, p in state.table_files}
        absent = sorted(p for p in state.listed(root) if p not in present)
        if absent:
            report.missing[run_id] = absent
        steps = plan(state, root, now, max_age, keep_attempts, without_iceberg=iceberg is None)
        tables = sorted(iceberg.disagreements(run_id, state.manifest)) if iceberg is not None else []
        marked = needs_catalog(state, root) if iceberg is None else {}
        if marked:
            report.skipped[run_id] = "; ".join(
                f"attempt {a} was never published and may be in the Iceberg tables (catalog "
                f"{m.get('catalog')}, namespace {m.get('namespace')}): its table files stay where they "
                f"are until a reconciliation with --iceberg_catalog {m.get('catalog')}"
                for a, m in sorted(marked.items()))
        if not steps and not tables:
            continue
        if dry_run:
            report.planned[run_id] = [f"Iceberg: bring {t} in line with the manifest" for t in tables] + \
                [s.describe() for s in steps]
            continue
        lease, taken = held.get(run_id), None
        if lease is None:
            try:
                taken = lease = RunLease(output, run_id, f"reconcile-{secrets.token_hex(3)}", storage_options,
                                         settle_seconds=settle_seconds).acquire()
            except LeaseHeldError as e:
                report.skipped[run_id] = str(e)
                continue
        try:
            lease.check()
            # Under the lease, from the store as it is now: the plan made before may be stale.
            state = survey(output, storage_options, only=run_id)[run_id]
            if state.unreadable:
                raise ValueError(state.unreadable)
            done = []
            if iceberg is not None:
                done += [f"Iceberg: {t} brought in line with the manifest"
                         for t in iceberg.align(run_id, state.manifest, lease.check)]
            for step in plan(state, root, now, max_age, keep_attempts, without_iceberg=iceberg is None):
                lease.check()
                _apply(fs, step)
                done.append(step.describe())
            report.done[run_id] = done
            for line in done:
                _LOG.warning("run %s: reconciled: %s", run_id, line)
        except Exception as e:
            report.failed[run_id] = f"{type(e).__name__}: {e}"
            _LOG.error("run %s: reconciliation failed (%s: %s); the next one retries", run_id, type(e).__name__, e)
        finally:
            if taken is not None:
                taken.release()
    return report

