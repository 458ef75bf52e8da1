"""pyarrow schemas of every table the pipeline writes.

SCHEMA_VERSION is stored in each table's schema metadata; bump it whenever a
column is added, removed or changes meaning, so readers can tell layouts apart.
"""
import pyarrow as pa

# 2: segments table; clips.num_windows, clips.aggregation; shard_uri, member_name (clips, errors)
#    and meta (clips) for clips read from tar shards.
# 3: clips.silent and clips.source_version; optional scores/embedding columns (with_optional_outputs).
# 4: clips.duration_seconds is the decoded duration (was: the header's claim); new
#    clips.declared_duration_seconds (the header's claim) and clips.truncated.
#    One schema per table whatever the options: clips and segments always carry scores and
#    embedding (null unless --emit_scores / --emit_embeddings); embeddings are float32 only
#    (Parquet FLOAT16 is unreadable in Spark).
# 5: labelling_fingerprint (clips, segments, errors): the SHA-256 of everything that changes a row
#    (transforms/scoring/fingerprint.py); --skip_labelled matches on it instead of model_sha256.
SCHEMA_VERSION = "5"

def list_of(item: pa.DataType) -> pa.ListType:
    """A list column as the files hold it: the Parquet specification's element name
    (``list.element``, written with use_compliant_nested_type), which Spark, Trino and Iceberg's
    name mapping expect, so a file's schema equals the declared one."""
    return pa.list_(pa.field("element", item))


LABEL_SCORE = pa.struct([
    pa.field("label", pa.string(), nullable=False),
    pa.field("index", pa.int32(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
])

_METADATA = {b"schema_version": SCHEMA_VERSION.encode()}

# Columns filled only when a run asks for them, and null otherwise: present in every file, so
# runs with and without them share one schema and readers need no schema merging.
# scores: the full score vector in label-index order (the vocabulary of --label_map when one is
# given); embedding: the model's pooled output (for a clip, the mean over its windows).
OPTIONAL_OUTPUTS = (
    pa.field("scores", list_of(pa.float32())),      # --emit_scores
    pa.field("embedding", list_of(pa.float32())),   # --emit_embeddings
)

CLIPS_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("shard_uri", pa.string()),       # the tar shard holding the clip; null for plain files
    pa.field("member_name", pa.string()),     # the clip's member name inside shard_uri
    pa.field("meta", pa.string()),            # JSON text of the sample's .json sidecar, if any
    pa.field("source_version", pa.string()),  # ETag (or size+mtime) of the file/shard when read
    pa.field("duration_seconds", pa.float64()),             # decoded: the audio the file really holds
    pa.field("declared_duration_seconds", pa.float64()),    # what the file's header claims
    pa.field("truncated", pa.bool_()),                      # decoded less than the header claims
    pa.field("original_sample_rate", pa.int32()),
    pa.field("channels", pa.int32()),
    pa.field("labels", list_of(LABEL_SCORE)),       # top-k of the aggregated window scores
    pa.field("num_windows", pa.int32()),              # windows the clip was cut into
    pa.field("aggregation", pa.string()),             # how window scores became clip scores: max|mean
    pa.field("silent", pa.bool_()),                   # digital silence: no sample above one 16-bit step
    pa.field("activation", pa.string()),
    pa.field("model_id", pa.string()),
    pa.field("model_sha256", pa.string()),
    # SHA-256 of everything that changes a row (weights, config, features, window and hop,
    # aggregation, activation, label selection, optional outputs, schema version): rows with equal
    # fingerprints were labelled the same way. The run's manifest lists what went in.
    pa.field("labelling_fingerprint", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("labelled_at", pa.timestamp("us", tz="UTC")),
    *OPTIONAL_OUTPUTS,
], metadata=_METADATA)

# One row per window of every labelled clip (windows of clips that went to the errors table
# are not written). Times are seconds in the source's timeline; end excludes padding.
SEGMENTS_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("window_index", pa.int32(), nullable=False),
    pa.field("start_seconds", pa.float64(), nullable=False),
    pa.field("end_seconds", pa.float64(), nullable=False),
    pa.field("labels", list_of(LABEL_SCORE)),
    pa.field("labelling_fingerprint", pa.string()),   # as in clips
    pa.field("run_id", pa.string(), nullable=False),
    *OPTIONAL_OUTPUTS,
], metadata=_METADATA)

ERRORS_SCHEMA = pa.schema([
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("clip_id", pa.string()),
    pa.field("shard_uri", pa.string()),
    pa.field("member_name", pa.string()),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("error_type", pa.string(), nullable=False),
    pa.field("message", pa.string()),
    pa.field("labelling_fingerprint", pa.string()),   # the settings the input failed under
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
], metadata=_METADATA)

# Not a label table: one row per tar shard a run saw, in <run>/_stats/shards/ (pipeline/runs/layout.py).
# --skip_labelled skips a shard unread when a complete read of the same version found
# audio_members members and every one of them was labelled the same way.
SHARD_STATS_SCHEMA = pa.schema([
    pa.field("shard_uri", pa.string(), nullable=False),
    pa.field("source_version", pa.string()),
    pa.field("audio_members", pa.int64(), nullable=False),
    pa.field("complete", pa.bool_(), nullable=False),   # read to its end (or skipped whole)
], metadata=_METADATA)

TABLES = {"clips": CLIPS_SCHEMA, "segments": SEGMENTS_SCHEMA, "errors": ERRORS_SCHEMA}

