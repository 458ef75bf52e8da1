"""Command-line options of the labelling job. Beam's own options pass through."""
from apache_beam.options.pipeline_options import PipelineOptions


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
                                 "options); tables go under <output>/<run_id>/.")
        parser.add_argument("--model", default=None,
                            help="AST checkpoint directory in Hugging Face layout (config.json, "
                                 "model.safetensors, optional preprocessor_config.json).")
        parser.add_argument("--shared_filesystem", action="store_true",
                            help="Local paths in --input, --input_manifest, --output, --model, "
                                 "--skip_labelled and --temp_location are on storage every worker "
                                 "mounts at the same path (NFS, a cluster file system). Without it, "
                                 "runners other than the DirectRunner refuse local paths.")
        parser.add_argument("--backend", default="native", choices=["native", "mindnlp"],
                            help="native: AST as compiled MindSpore Cells (fast); "
                                 "mindnlp: MindNLP's transformers port (reference).")
        parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu", "ascend"],
                            help="MindSpore device for the native backend; auto tries Ascend, then "
                                 "GPU, then CPU on each worker and logs its choice.")
        parser.add_argument("--model_copies", type=int, default=1,
                            help="Models per machine, shared by its worker processes; on GPU/Ascend "
                                 "each copy is placed on its own device (one model per device).")
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
                                 "finished run there labelled with the same weights, from an unchanged "
                                 "source (same ETag, or size and mtime), are skipped and counted.")
        parser.add_argument("--progress_seconds", type=float, default=30.0,
                            help="Each worker logs a progress line at most this often.")
        parser.add_argument("--emit_scores", action="store_true",
                            help="Add the full score vector (label-index order) to clips and segments.")
        parser.add_argument("--emit_embeddings", default=None, choices=["float16", "float32"],
                            help="Add the model's pooled embedding to segments, and its mean over "
                                 "windows to clips, in this precision.")
        parser.add_argument("--hop_seconds", type=float, default=None,
                            help="Files are labelled in windows of the model's input length "
                                 "(max_length x 10 ms: 10.24 s for AST). A window starts every "
                                 "hop_seconds; default: one window length (no overlap). Must be "
                                 "more than 0 and at most the window length; half of it gives 50%% "
                                 "overlap. The last partial window is zero-padded like AST pads a "
                                 "short clip; a tail shorter than 25 ms after the last full window "
                                 "can make no fbank frame and is dropped (with overlap the last "
                                 "window always covers it).")
        parser.add_argument("--aggregate", default="max", choices=["max", "mean"],
                            help="How a clip's label scores are made from its windows' scores "
                                 "(after the activation): max (default) - a class scores as high as "
                                 "its best window; mean - the average over windows. Per-window "
                                 "labels go to the segments table.")
        parser.add_argument("--activation", default="sigmoid", choices=["sigmoid", "softmax"],
                            help="sigmoid for multi-label checkpoints (AudioSet), softmax for "
                                 "single-label ones.")
        parser.add_argument("--run_id", default=None,
                            help="Run identifier (default: UTC time + random suffix).")
        parser.add_argument("--max_duration_seconds", type=float, default=None,
                            help="Refuse files whose header declares a longer duration (or that "
                                 "decode to one).")
