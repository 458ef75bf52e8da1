"""The offline demo (python -m pipeline.demo) with its sample-audio and tiny-checkpoint generators."""
