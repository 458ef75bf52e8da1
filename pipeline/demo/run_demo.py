"""Offline demo: sample audio + an untrained tiny AST checkpoint -> a full labelling run.

    python -m pipeline.demo --workdir demo_output
"""
from __future__ import annotations

import argparse
import os

from transforms.model.runtime_env import ensure_protobuf_python_backend

ensure_protobuf_python_backend()

from pipeline.demo.audio import write_demo_audio  # noqa: E402
from pipeline.demo.checkpoint import TinyASTSpec, write_checkpoint  # noqa: E402

UNTRAINED_NOTICE = ("NOTE: the demo checkpoint has randomly initialised, UNTRAINED weights. "
                    "Its labels show that the pipeline works end to end; they say nothing about the audio.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="demo_output")
    parser.add_argument("--backend", default="native", choices=["native", "mindnlp"])
    args = parser.parse_args(argv)
    audio_dir = os.path.join(args.workdir, "audio")
    model_dir = os.path.join(args.workdir, "tiny_ast_untrained")
    tables_dir = os.path.join(args.workdir, "tables")
    files = write_demo_audio(audio_dir)
    write_checkpoint(model_dir, TinyASTSpec(), seed=0)
    print(f"wrote {len(files)} sample audio files to {audio_dir} and a tiny AST checkpoint to {model_dir}")
    print(UNTRAINED_NOTICE)
    import logging

    from pipeline.main import run

    logging.basicConfig(level=logging.WARNING)
    summary = run(["--input", audio_dir, "--output", tables_dir, "--model", model_dir,
                   "--backend", args.backend, "--batch_size", "4"])
    print(summary.render())
    try:
        from pipeline.report import build_report
        from pipeline.runs.layout import run_meta_dir
    except ImportError as e:   # installed without the report extra
        print(f"report skipped: {e}")
    else:
        report = build_report(run_meta_dir(tables_dir, summary.run_id), os.path.join(args.workdir, "report"))
        print(f"report: {report}")
    print(UNTRAINED_NOTICE)
    return 0

