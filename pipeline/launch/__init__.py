"""The launcher's parts: options, storage settings, worker-reach checks and the Beam graph (build.py)."""
