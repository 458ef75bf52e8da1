"""Stored embedding columns (``list<float32>``) as numpy matrices, without Python lists. Beam-free;
the launcher's index build (pipeline/vectors/) and the workers' custom-class scoring
(transforms/custom_labels.py) read them the same way."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def embedding_matrix(column: pa.Array, what: str) -> np.ndarray:
    """A list<float32> column as an (n, d) float32 array; a null or ragged row is an error
    naming ``what`` (a run labelled without --emit_embeddings has nulls)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError(f"{what}: {column.null_count} row(s) have no embedding (labelled without "
                         "--emit_embeddings?)")
    if len(column) == 0:
        return np.zeros((0, 0), np.float32)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max() or lengths[0] == 0:
        raise ValueError(f"{what}: embeddings of different lengths ({lengths.min()}..{lengths.max()})")
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), int(lengths[0]))
