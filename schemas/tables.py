"""pyarrow schemas of every table the pipeline writes.

SCHEMA_VERSION is stored in each table's schema metadata; bump it whenever a
column is added, removed or changes meaning, so readers can tell layouts apart.
"""
import pyarrow as pa

# 2: shard_uri, member_name (clips, errors) and meta (clips) for clips read from tar shards.
SCHEMA_VERSION = "2"

LABEL_SCORE = pa.struct([
    pa.field("label", pa.string(), nullable=False),
    pa.field("index", pa.int32(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
])

_METADATA = {b"schema_version": SCHEMA_VERSION.encode()}

CLIPS_SCHEMA = pa.schema([
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("shard_uri", pa.string()),       # the tar shard holding the clip; null for plain files
    pa.field("member_name", pa.string()),     # the clip's member name inside shard_uri
    pa.field("meta", pa.string()),            # JSON text of the sample's .json sidecar, if any
    pa.field("duration_seconds", pa.float64()),
    pa.field("original_sample_rate", pa.int32()),
    pa.field("channels", pa.int32()),
    pa.field("labels", pa.list_(LABEL_SCORE)),
    pa.field("activation", pa.string()),
    pa.field("model_id", pa.string()),
    pa.field("model_sha256", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("labelled_at", pa.timestamp("us", tz="UTC")),
], metadata=_METADATA)

ERRORS_SCHEMA = pa.schema([
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("clip_id", pa.string()),
    pa.field("shard_uri", pa.string()),
    pa.field("member_name", pa.string()),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("error_type", pa.string(), nullable=False),
    pa.field("message", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
], metadata=_METADATA)

TABLES = {"clips": CLIPS_SCHEMA, "errors": ERRORS_SCHEMA}
