"""pyarrow schema of the custom_labels table (python -m pipeline.classify apply).

One row per window of a published run and label of a custom classifier, written to
``<output>/custom_labels/classifier=<classifier_id>/run_id=<run_id>/``; ``run_id`` is the run whose
stored embeddings were scored (its rows follow the current-labels rule with ``labelled_at``, the
clip's, as the clips table does).
"""
import pyarrow as pa

CUSTOM_LABELS_VERSION = "1"

CUSTOM_LABELS_SCHEMA = pa.schema([
    pa.field("classifier_id", pa.string(), nullable=False),
    pa.field("label", pa.string(), nullable=False),
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("window_index", pa.int32(), nullable=False),
    pa.field("start_seconds", pa.float64(), nullable=False),
    pa.field("end_seconds", pa.float64(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("positive", pa.bool_(), nullable=False),        # score >= the label's threshold
    pa.field("run_id", pa.string(), nullable=False),         # the run whose embeddings were scored
    pa.field("labelled_at", pa.timestamp("us", tz="UTC")),   # the clip's, in that run
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),
], metadata={b"custom_labels_version": CUSTOM_LABELS_VERSION.encode()})
