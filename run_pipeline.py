#!/usr/bin/env python
"""Label audio with an AST model into Parquet tables. See README.md; --help lists the options."""
import os
import sys

# Before anything imports protobuf (Apache Beam does): MindSpore needs the python backend.
os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"

# Before Apache Beam is imported: its import logs a warning through the root logger, which would
# configure logging at WARNING and hide the project's INFO lines (pipeline/console/logs.py).
from pipeline.console.logs import configure_logging  # noqa: E402

configure_logging()

from pipeline.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
