"""Beam glue (DoFns, the ModelHandler) and the shared value types, with the Beam-free core below it:
io/ (storage, sources, shards, checkpoints), audio/ (decode, windows, fbank), model/ (AST),
scoring/ (labels, aggregation, rows)."""
