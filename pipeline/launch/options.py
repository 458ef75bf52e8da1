"""Command-line options of the labelling job. Beam's own options pass through; any other
option is refused at launch (:func:`unknown_options`)."""
import difflib
import importlib

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

# Runners whose options live outside apache_beam.options.pipeline_options: imported (when the
# runner is named) so that their options are registered before unknown options are looked for.
_RUNNER_OPTION_MODULES = {"dask": "apache_beam.runners.dask.dask_runner"}


class LabelAudioOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--input", action="append", default=None,
                            help="Audio to label: a file, a directory (its audio files and tar shards, "
                                 "recursively), a glob (** too) or any fsspec URL (s3://, gs://, az://, "
                                 "http(s)://, memory://, file://). .tar/.tar.gz/.tgz are read as "
                                 "WebDataset shards. Repeat for several.")
        parser.add_argument("--input_manifest", action="append", default=None,
                            help="A list of URIs to label, at any fsspec URL: .txt (one a line), "
                                 ".csv/.jsonl/.parquet (a 'uri' column). Entries are taken literally. "
                                 "Repeat for several; combines with --input.")
        parser.add_argument("--storage_options", default=None,
                            help="JSON object of fsspec options for every remote filesystem, e.g. "
                                 '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:8333"}}\', or '
                                 'keyed by protocol: \'{"s3": {...}, "https": {...}}\'. Credentials in it '
                                 "are kept out of logs and pipeline options; prefer the usual environment "
                                 "variables (AWS_ACCESS_KEY_ID, ...). Beam's --s3_* options configure "
                                 "writing tables to s3://; each set fills in what the other leaves out.")
        parser.add_argument("--output", default=None,
                            help="Output root, a directory or URL (s3://bucket/prefix with Beam's --s3_* "
                                 "options); a run's rows go to <output>/<table>/run_id=<run_id>/ "
                                 "(clips, segments, errors), its manifest and statistics to "
                                 "<output>/_runs/<run_id>/.")
        parser.add_argument("--model", default=None,
                            help="AST checkpoint directory in Hugging Face layout (config.json, "
                                 "model.safetensors, optional preprocessor_config.json), local or a URL; "
                                 "or a Hugging Face model id ORG/NAME[@REVISION] or hf://ORG/NAME[@REVISION] "
                                 "(HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE and HF_TOKEN are honoured).")
        parser.add_argument("--shared_filesystem", action="store_true",
                            help="Local paths in --input, --input_manifest, --output, --model, "
                                 "--skip_labelled and --temp_location are on storage every worker "
                                 "mounts at the same path (NFS, a cluster file system). Without it, "
                                 "runners other than the DirectRunner refuse local paths.")
        parser.add_argument("--backend", default="native", choices=["native", "mindnlp"],
                            help="native: AST as compiled MindSpore Cells (fast); "
                                 "mindnlp: MindNLP's transformers port (reference; needs the "
                                 "package's mindnlp extra: pip install '.[mindnlp]').")
        parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "ascend"],
                            help="MindSpore device for the native backend; auto tries Ascend, then "
                                 "GPU, then CPU on each worker and logs its choice.")
        parser.add_argument("--model_copies", type=int, default=1,
                            help="Models per machine, shared by its worker processes; a copy runs on "
                                 "the device of the process that loads it (on GPU/Ascend each worker "
                                 "process takes its own device, logged).")
        parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"],
                            help="Compute precision on GPU/Ascend (CPU workers always use fp32).")
        parser.add_argument("--batch_size", type=int, default=8,
                            help="Windows per inference call (fixed; the last batch is padded).")
        parser.add_argument("--top_k", type=int, default=5,
                            help="Labels kept per clip (clips table) and per window (segments table).")
        parser.add_argument("--threshold", type=float, default=None,
                            help="Keep only labels scoring at least this (0..1), within the top-k.")
        parser.add_argument("--class_thresholds", default=None,
                            help="CSV label,threshold: per-class thresholds that override --threshold.")
        parser.add_argument("--label_map", default=None,
                            help="CSV source_label,target_label: report labels in this vocabulary; a "
                                 "target scores the max of its sources, unmapped classes are dropped.")
        parser.add_argument("--skip_labelled", default=None,
                            help="Output root of earlier runs (may equal --output): clips that a "
                                 "published run there labelled with the same labelling fingerprint "
                                 "(weights, config, preprocessor settings, window and hop, "
                                 "aggregation, activation, labels and thresholds, top_k, optional "
                                 "outputs, schema version), from an unchanged source (same ETag, or "
                                 "size and mtime), are skipped and counted.")
        parser.add_argument("--allow_empty", action="store_true",
                            help="Publish a run that found no audio file or shard at all; without "
                                 "it such a run exits 1 and publishes nothing.")
        parser.add_argument("--progress_seconds", type=float, default=30.0,
                            help="How often the launcher logs the job-wide progress line when its "
                                 "console is not a terminal (a terminal gets one line redrawn "
                                 "every second), and the workers report their counts.")
        parser.add_argument("--log_level", default="INFO", type=str.upper,
                            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                            help="The project's log lines from this level up. Other libraries "
                                 "(Beam, MindSpore) show warnings and errors; with DEBUG their INFO "
                                 "lines too.")
        parser.add_argument("-q", "--quiet", action="store_true",
                            help="Warnings, errors and the final summary only: --log_level WARNING "
                                 "and no progress line.")
        parser.add_argument("--emit_scores", action="store_true",
                            help="Add the full score vector (label-index order) to clips and segments.")
        # No argparse choices: a value other than float32 gets validate()'s message, which says
        # why float16 went, instead of argparse's bare "invalid choice".
        parser.add_argument("--emit_embeddings", nargs="?", const="float32", default=None,
                            metavar="float32",
                            help="Add the model's pooled embedding as float32 to segments, and its "
                                 "mean over windows to clips (the value may be left out).")
        parser.add_argument("--hop_seconds", type=float, default=None,
                            help="Files are labelled in windows of the model's input length "
                                 "(max_length x 10 ms: 10.24 s for AST). A window starts every "
                                 "hop_seconds; default: one window length (no overlap). Must be "
                                 "more than 0 and at most the window length; half of it gives 50%% "
                                 "overlap. When audio remains after the last full window, the last "
                                 "window is end-aligned: it ends at the file's end and overlaps its "
                                 "predecessor, so every window is full of real audio; only a file "
                                 "shorter than one window is zero-padded, as AST pads a short clip.")
        parser.add_argument("--aggregate", default="max", choices=["max", "mean"],
                            help="How a clip's label scores are made from its windows' scores "
                                 "(after the activation): max (default) - a class scores as high as "
                                 "its best window; mean - the average over windows. Per-window "
                                 "labels go to the segments table.")
        parser.add_argument("--activation", default="sigmoid", choices=["sigmoid", "softmax"],
                            help="sigmoid for multi-label checkpoints (AudioSet), softmax for "
                                 "single-label ones.")
        parser.add_argument("--iceberg_catalog", default=None,
                            help="Also commit each finished run to Apache Iceberg tables <namespace>."
                                 "{clips,segments,errors} in this pyiceberg catalog (configured in "
                                 ".pyiceberg.yaml or PYICEBERG_CATALOG__<NAME>__* variables; a name with "
                                 "no configuration is an embedded SQLite catalog under "
                                 "<output>/_iceberg for a local --output). The files are added in place, "
                                 "one commit per table per run.")
        parser.add_argument("--iceberg_namespace", default="audio_labelling",
                            help="Iceberg namespace of the tables (with --iceberg_catalog).")
        parser.add_argument("--run_id", default=None,
                            help="Run identifier (default: UTC time + random suffix).")
        parser.add_argument("--max_duration_seconds", type=float, default=None,
                            help="Refuse files whose header declares a longer duration (or that "
                                 "decode to one).")
        parser.add_argument("--max_error_fraction", type=float, default=0.25,
                            help="Fail the run without publishing it when more than this fraction "
                                 "of the discovered inputs end in the errors table (default 0.25, "
                                 "so a worker image that cannot decode anything fails loudly; "
                                 "1.0 disables the check).")
        parser.add_argument("--max_sample_bytes", type=int, default=256 << 20,
                            help="Tar shards: most bytes of one WebDataset sample (the members "
                                 "sharing a key) held in memory at once; an audio member past it "
                                 "gets an error row (default 256 MiB).")


# Flags the launcher takes out of the arguments before Beam sees them: Beam's TestOptions has
# its own --dry_run, which takes a value and means "do not submit" to some runners.
DRY_RUN = "--dry_run"


def add_launcher_flags(parser) -> None:
    parser.add_argument(DRY_RUN, action="store_true",
                        help="Check the options, the model and the output, discover the inputs, "
                             "print what would be read (counts by kind, total bytes, the first "
                             "URIs) and exit 0 without running the job.")


def take_launcher_flags(argv: list[str]) -> tuple[bool, list[str]]:
    """(--dry_run given, the arguments without it)."""
    return DRY_RUN in argv, [a for a in argv if a != DRY_RUN]


# How --help and the README's options table show a default that is not the value itself.
SHOWN_DEFAULTS = {"output": "required", "model": "required", "hop_seconds": "window length",
                  "run_id": "UTC time + random", "max_sample_bytes": "256 MiB", "emit_embeddings": "off"}


def shown_default(action) -> str:
    """The default of one of our options as --help and the README's table show it ('' for none)."""
    if action.dest in SHOWN_DEFAULTS:
        return SHOWN_DEFAULTS[action.dest]
    if action.default is None:
        return ""
    if action.default is False:
        return "off"
    if isinstance(action.default, float):
        return f"{action.default:g}"
    return str(action.default)


def help_parser(prog: str = "run_pipeline.py"):
    """Our options, each help text ending with its default as the README's table gives it."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog, description="Label audio with an AST model into Parquet tables.",
        epilog="Apache Beam's pipeline options (--runner, --direct_num_workers, "
               "--direct_running_mode, --setup_file, ...) are accepted too.")
    LabelAudioOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    add_launcher_flags(parser)
    for action in parser._actions:  # pylint: disable=protected-access
        shown = shown_default(action) if action.dest != "help" else ""
        if shown:
            action.help = f"{action.help} (default: {shown.replace('%', '%%')})"
    return parser


def _registered_option_classes() -> list[type]:
    """Every PipelineOptions subclass defined so far (Beam's, ours, a runner's), once each."""
    found, stack = {}, list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        found.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
        stack.extend(cls.__subclasses__())
    return list(found.values())


def unknown_options(argv: list[str]) -> list[str]:
    """One line per argument that no registered PipelineOptions class knows, with the nearest
    known option name. Beam's PipelineOptions would drop such an argument with a warning, so a
    typo (``--emit_score``) or an option of a newer release would silently change the job."""
    runner = " ".join(a for a in argv if "runner" in a).lower()
    for name, module in _RUNNER_OPTION_MODULES.items():
        if name in runner:
            try:
                importlib.import_module(module)
            except ImportError:
                pass
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    for cls in _registered_option_classes():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    try:
        _, unknown = parser.parse_known_args(argv)
    except SystemExit:   # a bad value of a known option: PipelineOptions reports it as before
        return []
    known = sorted({opt for action in parser._actions for opt in action.option_strings
                    if opt.startswith("--")})
    problems, after_unknown_option = [], False
    for arg in unknown:
        if arg == "--":
            break
        if not arg.startswith("-"):
            if not after_unknown_option:   # else: most likely the unknown option's value
                problems.append(f"unexpected argument {arg!r} (options take the form --name value)")
            after_unknown_option = False
            continue
        after_unknown_option = "=" not in arg
        name = arg.split("=", 1)[0]
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        problems.append(f"unknown option {name}" + (f" (did you mean {near[0]}?)" if near else ""))
    return problems
