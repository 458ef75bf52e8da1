"""Custom classes from a few examples (python -m pipeline.classify).

    python -m pipeline.classify train --output ROOT --examples examples.csv --name jingle \\
        --classifier_out jingle/            # fits, prints cross-validated precision/recall, saves
    python -m pipeline.classify apply --output ROOT --classifier jingle/ [--runs R1,R2] \\
        [--iceberg_catalog NAME] [Beam options: --runner, --direct_num_workers, ...]

``train`` reads the examples' embeddings from the index (python -m pipeline.index build) or
embeds audio examples with the index's checkpoint, and fits one logistic regression per label
(pipeline/classes/train.py). ``apply`` scores every window of the published runs as a Beam job
over their stored embeddings into the custom_labels table (pipeline/classes/apply.py).
"""
from __future__ import annotations

from transforms.model.runtime_env import ensure_protobuf_python_backend

ensure_protobuf_python_backend()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from pipeline.classes.examples import embed_examples, read_examples  # noqa: E402
from pipeline.classes.train import LabelFit, train_classifier  # noqa: E402
from pipeline.runs.summary import AccountingError  # noqa: E402
from pipeline.vectors.archive import Archive, NoIndexError  # noqa: E402
from pipeline.vectors.query import FingerprintMismatch, QueryEmbedder  # noqa: E402
from pipeline.vectors.runs import filesystem, run_id_list  # noqa: E402
from transforms.io.storage import StorageOptionsError, parse_storage_options  # noqa: E402
from transforms.scoring.custom_classes import CLASSIFIER_FILE, LinearClassifier, dumps, loads  # noqa: E402

__all__ = ["train", "apply", "save_classifier", "load_classifier", "main"]


def save_classifier(classifier: LinearClassifier, where: str, storage_options: dict | None = None) -> str:
    """Write ``<where>/classifier.json`` (a folder, local or URL); returns its path."""
    fs, folder = filesystem(where, storage_options)
    fs.makedirs(folder, exist_ok=True)
    path = f"{folder.rstrip('/')}/{CLASSIFIER_FILE}"
    fs.pipe_file(path, dumps(classifier))
    return path


def load_classifier(where: str, storage_options: dict | None = None) -> LinearClassifier:
    """A saved classifier: its folder or its classifier.json."""
    fs, path = filesystem(where, storage_options)
    if fs.isdir(path):
        path = f"{path.rstrip('/')}/{CLASSIFIER_FILE}"
    if not fs.exists(path):
        raise FileNotFoundError(f"no classifier at {where} (expected {CLASSIFIER_FILE})")
    return loads(fs.cat_file(path))


def train(output: str, examples: str | list, name: str = "custom", classifier_out: str | None = None,
          storage_options: dict | None = None, archive: Archive | None = None, model: str | None = None,
          regularisation: float = 1.0, device: str = "cpu") -> tuple[LinearClassifier, list[LabelFit]]:
    """Python entry point: fit a classifier from ``examples`` (a CSV path, or a list of
    pipeline/classes/examples.py Example), print nothing, return (classifier, per-label fits);
    ``classifier_out``: also save it there."""
    archive = archive or Archive.open(output, "segments", storage_options)
    rows = read_examples(examples, storage_options) if isinstance(examples, str) else list(examples)
    vectors = embed_examples(rows, archive, lambda: QueryEmbedder(archive.doc, model, storage_options, device))
    classifier, fits = train_classifier(name, [r.label for r in rows], [r.positive for r in rows], vectors,
                                        archive.embedding_fingerprint, archive.level, regularisation)
    if classifier_out:
        save_classifier(classifier, classifier_out, storage_options)
    return classifier, fits


def apply(output: str, classifier: LinearClassifier | str, beam_args: list[str] | None = None,
          storage_options: dict | None = None, runs: list[str] | None = None,
          iceberg_catalog: str | None = None, iceberg_namespace: str = "audio_labelling"):
    """Python entry point: score every published run's windows (pipeline/classes/apply.py);
    returns the ApplyReport."""
    from pipeline.classes.apply import apply_classifier
    from pipeline.launch.storage_settings import StorageSettings

    if isinstance(classifier, str):
        classifier = load_classifier(classifier, storage_options)
    argv = list(beam_args or [])
    if storage_options:
        import json

        argv.append(f"--storage_options={json.dumps(storage_options)}")
    storage, argv = StorageSettings.from_argv(argv)
    catalog = None
    if iceberg_catalog:
        from pipeline.lakehouse.iceberg_commit import open_catalog

        catalog = open_catalog(iceberg_catalog, output)
    with storage.environment():
        return apply_classifier(output, classifier, argv, storage.fsspec_options(), storage.public, runs,
                                catalog, iceberg_namespace)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.classify", description="Custom classes from examples.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fit a classifier per label from examples; print cross-validated precision/recall")
    t.add_argument("--output", required=True, help="output root of the runs (its index supplies clip embeddings)")
    t.add_argument("--examples", required=True, help="CSV: label, polarity, clip_id [window] | audio [start end]")
    t.add_argument("--name", default="custom", help="the classifier's name (its id adds a digest)")
    t.add_argument("--classifier_out", required=True, help="folder to save classifier.json in (path or URL)")
    t.add_argument("--model", help="checkpoint for audio examples (default: the index's; fingerprint must match)")
    t.add_argument("--regularisation", type=float, default=1.0, help="inverse regularisation C of the regression")
    t.add_argument("--storage_options", help="fsspec options as JSON")
    a = sub.add_parser("apply", help="score every window of the published runs into the custom_labels table")
    a.add_argument("--output", required=True)
    a.add_argument("--classifier", required=True, help="a saved classifier (folder or classifier.json)")
    a.add_argument("--runs", type=run_id_list,
                   help="comma-separated run ids (default: every published run with embeddings)")
    a.add_argument("--iceberg_catalog", help="also commit to the Iceberg table <namespace>.custom_labels")
    a.add_argument("--iceberg_namespace", default="audio_labelling")
    a.add_argument("--storage_options", help="fsspec options as JSON (credentials stay out of the job's options)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args, beam_args = parser().parse_known_args(argv)
    if args.command == "train" and beam_args:
        print(f"error: unknown options {' '.join(beam_args)}", file=sys.stderr)
        return 2
    try:
        storage_options = parse_storage_options(args.storage_options)
        if args.command == "train":
            classifier, fits = train(args.output, args.examples, args.name, args.classifier_out, storage_options,
                                     model=args.model, regularisation=args.regularisation)
            print(f"classifier {classifier.classifier_id} ({len(classifier.labels)} label(s)), saved to "
                  f"{args.classifier_out}")
            for fit in fits:
                print(fit.render())
            return 0
        report = apply(args.output, args.classifier, beam_args, storage_options, args.runs or None,
                       args.iceberg_catalog, args.iceberg_namespace)
    except (NoIndexError, FingerprintMismatch, StorageOptionsError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except AccountingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
