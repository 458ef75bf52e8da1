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
        parser.add_argument("--backend", default="native", choices=["native", "mindnlp"],
                            help="native: AST as compiled MindSpore Cells (fast); "
                                 "mindnlp: MindNLP's transformers port (reference).")
        parser.add_argument("--device", default="cpu", choices=["cpu", "gpu", "ascend"],
                            help="MindSpore device target for the native backend.")
        parser.add_argument("--batch_size", type=int, default=8,
                            help="Windows per inference call (fixed; the last batch is padded).")
        parser.add_argument("--top_k", type=int, default=5, help="Labels kept per clip.")
        parser.add_argument("--activation", default="sigmoid", choices=["sigmoid", "softmax"],
                            help="sigmoid for multi-label checkpoints (AudioSet), softmax for "
                                 "single-label ones.")
        parser.add_argument("--run_id", default=None,
                            help="Run identifier (default: UTC time + random suffix).")
        parser.add_argument("--max_duration_seconds", type=float, default=None,
                            help="Refuse files whose header declares a longer duration.")
