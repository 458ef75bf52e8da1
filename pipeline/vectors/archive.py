"""The index of an output root, opened for searching: every up-to-date partition, memory-mapped,
with the rows a later run superseded hidden. Beam-free.

Superseded rows: the current label of a clip is its row of the latest run that labelled it
(latest ``labelled_at``, ties to the larger run id; docs/lakehouse.md). Over every published run
(indexed or not: a run not yet indexed still supersedes older rows of its clips), each clip's
current run is worked out once when the archive is opened; a partition's rows of clips whose
current run is another are never returned.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.runs import store
from pipeline.runs.publish import read_json_document
from pipeline.runs.summary import read_table
from pipeline.vectors.layout import archive_doc_path, build_dir, partition_manifest_path
from pipeline.vectors.partition import Partition
from pipeline.vectors.runs import PublishedRun, filesystem, published_runs
from pipeline.vectors.where import Where
from transforms.io.checkpoint_cache import discard_entry, download_file, place_in_cache
from transforms.io.machine_cache import cache_subdir

_LOG = logging.getLogger(__name__)

HIT_SCHEMA = pa.schema([
    pa.field("rank", pa.int32()),
    pa.field("similarity", pa.float32()),
    pa.field("clip_id", pa.string()),
    pa.field("window_index", pa.int32()),
    pa.field("start_seconds", pa.float64()),
    pa.field("end_seconds", pa.float64()),
    pa.field("labels", pa.list_(pa.struct([("label", pa.string()), ("index", pa.int32()),
                                           ("score", pa.float32())]))),
    pa.field("source_uri", pa.string()),
    pa.field("shard_uri", pa.string()),
    pa.field("member_name", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("labelled_at", pa.timestamp("us", tz="UTC")),
])


class NoIndexError(FileNotFoundError):
    pass


def _latest_runs(clips: pa.Table) -> pa.Table:
    """(clip_id, run_id) of each clip's current row: latest labelled_at, ties to the larger run_id."""
    ranked = clips.sort_by([("clip_id", "ascending"), ("labelled_at", "descending"), ("run_id", "descending")])
    ids = ranked["clip_id"].combine_chunks()
    if len(ids) == 0:
        return ranked.select(["clip_id", "run_id"])
    first = np.ones(len(ids), bool)
    first[1:] = pc.not_equal(ids[1:], ids[:-1]).to_numpy(zero_copy_only=False)
    return ranked.select(["clip_id", "run_id"]).filter(pa.array(first))


@dataclasses.dataclass
class Archive:
    output: str
    level: str
    doc: dict
    partitions: list[Partition]
    notes: list[str]

    @property
    def embedding_fingerprint(self) -> str:
        return self.doc["embedding_fingerprint"]

    @classmethod
    def open(cls, output: str, level: str = "segments", storage_options: dict | None = None,
             cache_dir: str | None = None) -> "Archive":
        doc = read_json_document(archive_doc_path(output, level), storage_options)
        if doc is None:
            raise NoIndexError(f"no {level} index under {output}: build it with "
                               f"python -m pipeline.index build --output {output}"
                               + (" --level clips" if level == "clips" else ""))
        notes, partitions, clip_tables = [], [], []
        for run in published_runs(output, storage_options):
            manifest = read_json_document(partition_manifest_path(output, level, run.run_id), storage_options)
            if manifest is None or manifest.get("run_attempt") != run.attempt:
                if run.has_embeddings:
                    notes.append(f"run {run.run_id} is {'not indexed' if manifest is None else 'indexed from an earlier attempt'}"
                                 f": its rows are not searched (python -m pipeline.index build --output {output})")
                clip_tables.append(_clip_times(output, run, storage_options))
                continue
            if manifest["embedding_fingerprint"] != doc["embedding_fingerprint"]:
                notes.append(f"run {run.run_id}: indexed with another embedding fingerprint; not searched")
                # Not searched, but its clips' labels are still the latest: older rows stay hidden.
                clip_tables.append(_clip_times(output, run, storage_options))
                continue
            folder = _local_folder(output, level, run.run_id, manifest, storage_options, cache_dir)
            partition = Partition(folder, manifest)
            partitions.append(partition)
            clip_tables.append(partition.clips.select(["clip_id", "labelled_at", "run_id"]))
        archive = cls(output, level, doc, partitions, notes)
        archive._mark_current(clip_tables)
        return archive

    def _mark_current(self, clip_tables: list[pa.Table]) -> None:
        if not clip_tables:
            return
        every = pa.concat_tables([t.cast(pa.schema([("clip_id", pa.string()), ("labelled_at", pa.timestamp("us", tz="UTC")),
                                                    ("run_id", pa.string())])) for t in clip_tables])
        counts = pc.value_counts(every["clip_id"])
        repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        if len(repeated) == 0:
            return
        latest = _latest_runs(every.filter(pc.is_in(every["clip_id"], value_set=repeated)))
        for partition in self.partitions:
            positions = pc.index_in(partition.rows["clip_id"], value_set=latest["clip_id"])
            current_run = pc.take(latest["run_id"], positions)
            # Clips labelled by one run only are current; those relabelled are current where this run is the latest.
            partition.current = pc.fill_null(pc.equal(current_run, partition.run_id), True).to_numpy(
                zero_copy_only=False)

    # ------------------------------------------------------------------ search

    def search(self, query: np.ndarray, k: int = 10, where: Where | list[str] | None = None,
               nprobe: int | None = None, one_per_clip: bool = False) -> pa.Table:
        """The ``k`` rows most similar (cosine) to ``query``, best first, as a HIT_SCHEMA table.
        ``one_per_clip``: only each clip's best row (k places, not k windows of one place)."""
        where = where if isinstance(where, Where) else Where.parse(where)
        query = np.asarray(query, np.float32).reshape(-1)
        norm = float(np.linalg.norm(query))
        if norm == 0 or not np.isfinite(norm):
            raise ValueError("the query embedding is zero or not finite")
        if self.partitions and query.shape[0] != self.partitions[0].vectors.shape[1]:
            raise ValueError(f"the query has {query.shape[0]} dimensions, the index {self.partitions[0].vectors.shape[1]}")
        query = query / norm
        masks = []
        for partition in self.partitions:
            if not where.admits_run(partition.run_id):
                continue
            allowed = where.mask(partition.rows, partition.clips)
            if partition.current is not None:
                allowed = partition.current if allowed is None else allowed & partition.current
            masks.append((partition, allowed))
        fetch = k * 4 if one_per_clip else k
        while True:
            found, exhausted = [], True
            for partition, allowed in masks:
                scores, ids = partition.search(query, fetch, allowed, nprobe=nprobe)
                exhausted &= len(ids) < fetch
                found += [(float(s), int(i), partition) for s, i in zip(scores, ids)]
            found.sort(key=lambda hit: (-hit[0], hit[2].run_id, hit[1]))
            if not one_per_clip:
                return self._hits(found[:k])
            best, seen = [], set()
            for hit in found:
                clip = hit[2].rows["clip_id"][hit[1]].as_py()
                if clip not in seen:
                    seen.add(clip)
                    best.append(hit)
            if len(best) >= k or exhausted:
                return self._hits(best[:k])
            fetch *= 4   # the best rows were windows of few clips: look further

    def _hits(self, found) -> pa.Table:
        columns = {name: [] for name in HIT_SCHEMA.names}
        for rank, (score, row, partition) in enumerate(found, 1):
            r = partition.rows.slice(int(row), 1).to_pylist()[0]
            clip = partition.clips.slice(r["clip_row"], 1).to_pylist()[0]
            values = {**r, "rank": rank, "similarity": score, "shard_uri": clip.get("shard_uri"),
                      "member_name": clip.get("member_name"), "labelled_at": clip.get("labelled_at")}
            for name in HIT_SCHEMA.names:
                columns[name].append(values.get(name))
        return pa.table(columns, schema=HIT_SCHEMA)

    # ------------------------------------------------------------------ stored embeddings

    def vector_of(self, clip_id: str, window: int | None = None) -> np.ndarray:
        """The stored (normalised) embedding of a clip's window, or, without ``window`` in a
        segments index, the mean of its windows' (which points where clips.embedding, the mean
        of the raw window embeddings, points, up to the windows' differing lengths). From the
        clip's current run."""
        for partition in self.partitions:
            positions = partition.row_positions_of(clip_id)
            if partition.current is not None:
                positions = positions[partition.current[positions]]
            if not len(positions):
                continue
            if window is not None:
                windows = partition.rows["window_index"].to_numpy(zero_copy_only=False)[positions]
                chosen = positions[windows == window]
                if not len(chosen):
                    raise KeyError(f"clip {clip_id} has no window {window} (windows 0..{int(np.nanmax(windows))})")
                return np.asarray(partition.vectors[int(chosen[0])], np.float32)
            return np.asarray(partition.vectors[positions], np.float32).mean(axis=0)
        raise KeyError(f"clip {clip_id} is not in the {self.level} index of {self.output}")


def _clip_times(output: str, run: PublishedRun, storage_options) -> pa.Table:
    """(clip_id, labelled_at, run_id) of a published run that has no partition here."""
    return read_table(output, run.run_id, "clips", storage_options, columns=["clip_id", "labelled_at", "run_id"])


def _local_folder(output: str, level: str, run_id: str, manifest: dict, storage_options,
                  cache_dir: str | None) -> str:
    """The partition's build folder on local disk: where it is for a local output; otherwise a
    copy in the machine's cache (memory-mapping needs a local file), downloaded once per build
    (a build's files never change) and put in place whole (transforms/io/checkpoint_cache.py
    place_in_cache): an entry another process may be reading is never replaced."""
    url = build_dir(output, level, run_id, manifest["build"])
    fs, path = filesystem(url, storage_options)
    if store.is_local(fs):
        return path
    base = cache_dir or cache_subdir("index")
    key = hashlib.sha256(url.encode()).hexdigest()[:24]
    names = list(manifest["files"])

    def whole(entry: str) -> bool:
        return all(os.path.isfile(os.path.join(entry, name)) for name in names)

    def reuse(entry: str) -> bool:
        if whole(entry):
            return True
        discard_entry(entry, base)   # damaged (files deleted by hand): fetched again
        return False

    local = os.path.join(base, key)
    if os.path.isdir(local) and reuse(local):
        return local

    def fill(partial: str) -> str:
        for name in names:
            download_file(fs, f"{path.rstrip('/')}/{name}", os.path.join(partial, name), f"{url}/{name}")
        return key

    placed = place_in_cache(base, fill, reuse)
    if placed is None:
        raise OSError(f"could not put index partition {url} into the cache folder {local}")
    return placed
