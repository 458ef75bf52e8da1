"""--skip_labelled decisions per source (transforms/io/incremental.py), on hand-made history."""
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.io.incremental import (
    CLIPS_COLUMNS, PreviousLabelling, UnversionedSources, is_real_version, iter_parquet_rows, labelling_key,
    previous_entry)

FP, OTHER = "a" * 64, "b" * 64


def row(member, version, fp=FP, shard="s3://b/s.tar"):
    clip_id = f"{shard}#{member}" if shard else member
    return {"clip_id": clip_id, "shard_uri": shard, "member_name": member if shard else None,
            "source_version": version, "labelling_fingerprint": fp}


def known(rows, shard_records=()):
    return PreviousLabelling.of([previous_entry(r)[1] for r in rows if previous_entry(r)], shard_records)


def test_same_labelling_is_same_fingerprint_over_same_version():
    assert labelling_key(FP, "etag:1") == labelling_key(FP, "etag:1")
    assert labelling_key(FP, "etag:1") != labelling_key(FP, "etag:2")
    assert labelling_key(FP, "etag:1") != labelling_key(OTHER, "etag:1")
    assert labelling_key(FP, None) is None and labelling_key(None, "etag:1") is None
    assert previous_entry(row("x.wav", None)) is None
    assert previous_entry(row("/a/x.wav", "etag:v", shard=None)) == ("/a/x.wav", (None, (FP, "etag:v")))


def test_a_source_without_etag_or_mtime_has_no_key_so_is_never_skipped():
    # Storage.version's forms (transforms/io/storage.py): an ETag, or size and mtime.
    assert is_real_version("etag:abc") and is_real_version("size:10;mtime:1700000000.5")
    assert is_real_version("size:10;mtime:2024-05-01 10:00:00+00:00")
    for unreal in ("size:10;mtime:None", "size:None;mtime:None", "etag:", "", None):
        assert not is_real_version(unreal), unreal
        assert labelling_key(FP, unreal) is None
    # Its earlier rows never match, and neither do its shard's members.
    assert previous_entry(row("/a/x.wav", "size:10;mtime:None", shard=None)) is None
    members = [row(f"{i}.wav", "size:99;mtime:None") for i in range(2)]
    assert known(members, [("size:99;mtime:None", 2)]).whole_shard(FP, "size:99;mtime:None") is None
    assert not known(members).has("0.wav", labelling_key(FP, "size:99;mtime:None"))


def test_unversioned_sources_are_logged_once_per_process(caplog):
    UnversionedSources.reset()
    with caplog.at_level(logging.WARNING, logger="transforms.io.incremental"):
        logged = [UnversionedSources.note(f"http://h/{i}.wav", "size:1;mtime:None") for i in range(5)]
    assert logged == [True, False, False, False, False]
    warnings = [r.getMessage() for r in caplog.records if r.name == "transforms.io.incremental"]
    assert len(warnings) == 1 and "http://h/0.wav" in warnings[0] and "labelled again" in warnings[0]
    UnversionedSources.reset()


def test_rows_of_an_older_schema_without_a_fingerprint_never_match(tmp_path):
    # A clips file of schema version 4 (model_sha256, no labelling_fingerprint) in the output root.
    path = str(tmp_path / "v4.parquet")
    pq.write_table(pa.Table.from_pylist([{"clip_id": "/a/x.wav", "shard_uri": None, "member_name": None,
                                          "source_version": "etag:1", "model_sha256": FP}]), path)
    with open(path, "rb") as f:
        rows = list(iter_parquet_rows(f, CLIPS_COLUMNS))
    assert len(rows) == 1 and rows[0].get("labelling_fingerprint") is None
    assert previous_entry(rows[0]) is None


def test_whole_shard_skipped_only_when_every_member_was_labelled_the_same_way():
    members = [row(f"{i}.wav", "etag:v1") for i in range(3)]
    assert known(members, [("etag:v1", 3)]).whole_shard(FP, "etag:v1") == 3
    # The shard changed since: read it.
    assert known(members, [("etag:v1", 3)]).whole_shard(FP, "etag:v2") is None
    # Another fingerprint (other weights or settings): read it.
    assert known(members, [("etag:v1", 3)]).whole_shard(OTHER, "etag:v1") is None
    # A member errored or was never labelled (4 audio members, 3 labelled): read it.
    assert known(members, [("etag:v1", 4)]).whole_shard(FP, "etag:v1") is None
    # No record of how many members the shard holds (runs before shard statistics): read it.
    assert known(members).whole_shard(FP, "etag:v1") is None
    # Members labelled over several runs (one row each, some twice) add up by name, not by rows.
    assert known(members + members[:1], [("etag:v1", 4)]).whole_shard(FP, "etag:v1") is None
    # Labelled under another fingerprint do not count.
    mixed = members[:2] + [row("2.wav", "etag:v1", fp=OTHER)]
    assert known(mixed, [("etag:v1", 3)]).whole_shard(FP, "etag:v1") is None
    assert known(mixed).has("0.wav", labelling_key(FP, "etag:v1"))
    assert not known(mixed).has("2.wav", labelling_key(FP, "etag:v1"))
