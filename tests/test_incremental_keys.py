"""--skip_labelled decisions per source (transforms/io/incremental.py), on hand-made history."""
from transforms.io.incremental import PreviousLabelling, labelling_key, previous_entry

SHA, OTHER = "a" * 64, "b" * 64


def row(member, version, sha=SHA, shard="s3://b/s.tar"):
    clip_id = f"{shard}#{member}" if shard else member
    return {"clip_id": clip_id, "shard_uri": shard, "member_name": member if shard else None,
            "source_version": version, "model_sha256": sha}


def known(rows, shard_records=()):
    return PreviousLabelling.of([previous_entry(r)[1] for r in rows if previous_entry(r)], shard_records)


def test_same_labelling_is_same_weights_over_same_version():
    assert labelling_key(SHA, "etag:1") == labelling_key(SHA, "etag:1")
    assert labelling_key(SHA, "etag:1") != labelling_key(SHA, "etag:2")
    assert labelling_key(SHA, "etag:1") != labelling_key(OTHER, "etag:1")
    assert labelling_key(SHA, None) is None and labelling_key(None, "etag:1") is None
    assert previous_entry(row("x.wav", None)) is None
    assert previous_entry(row("/a/x.wav", "v", shard=None)) == ("/a/x.wav", (None, (SHA, "v")))


def test_whole_shard_skipped_only_when_every_member_was_labelled_the_same_way():
    members = [row(f"{i}.wav", "v1") for i in range(3)]
    assert known(members, [("v1", 3)]).whole_shard(SHA, "v1") == 3
    # The shard changed since: read it.
    assert known(members, [("v1", 3)]).whole_shard(SHA, "v2") is None
    # Other weights: read it.
    assert known(members, [("v1", 3)]).whole_shard(OTHER, "v1") is None
    # A member errored or was never labelled (4 audio members, 3 labelled): read it.
    assert known(members, [("v1", 4)]).whole_shard(SHA, "v1") is None
    # No record of how many members the shard holds (runs before shard statistics): read it.
    assert known(members).whole_shard(SHA, "v1") is None
    # Members labelled over several runs (one row each, some twice) add up by name, not by rows.
    assert known(members + members[:1], [("v1", 4)]).whole_shard(SHA, "v1") is None
    # Labelled with other weights do not count.
    mixed = members[:2] + [row("2.wav", "v1", sha=OTHER)]
    assert known(mixed, [("v1", 3)]).whole_shard(SHA, "v1") is None
    assert known(mixed).has("0.wav", labelling_key(SHA, "v1"))
    assert not known(mixed).has("2.wav", labelling_key(SHA, "v1"))
