"""The labelling fingerprint (transforms/scoring/fingerprint.py): every input that changes a row
changes it; what only changes speed (batch size, device, backend, workers) does not. Options are
parsed as the launcher parses them, the checkpoint is the real tiny one."""
import dataclasses
import json
import os
import shutil

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.demo.checkpoint import label_names
from pipeline.launch.options import LabelAudioOptions
from transforms.audio.windowing import WindowGeometry
from transforms.io.checkpoint import CONFIG_FILE, PREPROCESSOR_FILE, inspect_checkpoint
from transforms.scoring.fingerprint import fingerprint_inputs, labelling_fingerprint, run_fingerprint
from transforms.scoring.labels import LabelSelection


def fingerprint(checkpoint, *argv):
    opts = PipelineOptions(["--model", checkpoint.uri, *argv]).view_as(LabelAudioOptions)
    selection = LabelSelection.load(checkpoint.labels, opts.top_k, opts.threshold, opts.class_thresholds,
                                    opts.label_map)
    return run_fingerprint(opts, checkpoint, selection)


@pytest.fixture(scope="module")
def info(tiny_checkpoint):
    return inspect_checkpoint(tiny_checkpoint)


def _csv(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_every_input_that_changes_a_row_changes_the_fingerprint(info, tmp_path):
    base, inputs = fingerprint(info)
    assert len(base) == 64 and base == labelling_fingerprint(inputs)
    labels = label_names(12)
    label_map = _csv(tmp_path, "map.csv", f"source_label,target_label\n{labels[0]},a\n{labels[1]},b\n")
    thresholds = _csv(tmp_path, "thr.csv", f"label,threshold\n{labels[0]},0.3\n")
    variants = {
        "hop": ["--hop_seconds", "5"],
        "aggregate": ["--aggregate", "mean"],
        "activation": ["--activation", "softmax"],
        "top_k": ["--top_k", "3"],
        "threshold": ["--threshold", "0.2"],
        "class_thresholds": ["--class_thresholds", thresholds],
        "label_map": ["--label_map", label_map],
        "emit_scores": ["--emit_scores"],
        "emit_embeddings": ["--emit_embeddings"],
        "max_duration": ["--max_duration_seconds", "60"],
        "precision": ["--precision", "fp16", "--device", "gpu"],
    }
    seen = {"base": base}
    for name, argv in variants.items():
        seen[name] = fingerprint(info, *argv)[0]
    # Checkpoint inputs: weights, config.json, each preprocessor setting.
    checkpoints = {
        "weights": dataclasses.replace(info, weights_sha256="0" * 64),
        "config": dataclasses.replace(info, file_sha256={**info.file_sha256, CONFIG_FILE: "1" * 64}),
        **{f"features.{field}": dataclasses.replace(
            info, features=dataclasses.replace(info.features, **{field: value}))
           for field, value in (("mean", info.features.mean + 0.5), ("std", info.features.std * 2),
                                ("max_length", 512), ("num_mel_bins", 64), ("do_normalize", False))},
    }
    for name, checkpoint in checkpoints.items():
        seen[name] = fingerprint(checkpoint)[0]
    # The tables' schema version and the code's labelling rules (defaults as above, one changed).
    defaults = dict(aggregation="max", activation="sigmoid", emit_scores=False, emit_embeddings=None,
                    max_duration_seconds=None, precision="fp32")
    geometry, selection = WindowGeometry.for_features(info.features), LabelSelection.load(info.labels)
    assert labelling_fingerprint(fingerprint_inputs(info, geometry, selection, **defaults)) == base
    seen["schema_version"] = labelling_fingerprint(fingerprint_inputs(
        info, geometry, selection, **defaults, schema_version="999"))
    seen["rules_version"] = labelling_fingerprint(fingerprint_inputs(
        info, geometry, selection, **defaults, rules_version=999))
    assert len(set(seen.values())) == len(seen), {k: v[:8] for k, v in seen.items()}


def test_what_only_changes_speed_or_where_files_lie_does_not(info, tmp_path):
    base, _ = fingerprint(info)
    for argv in (["--batch_size", "64"], ["--device", "cpu"], ["--backend", "native"],
                 ["--model_copies", "2"], ["--direct_num_workers", "4"], ["--progress_seconds", "1"],
                 ["--max_error_fraction", "1.0"], ["--run_id", "x"], ["--skip_labelled", str(tmp_path)]):
        assert fingerprint(info, *argv)[0] == base, argv
    # The default hop is one window: saying so explicitly cuts the same windows.
    window_seconds = info.features.max_length / 100
    assert fingerprint(info, "--hop_seconds", str(window_seconds))[0] == base
    # A label map is taken by content: the same file elsewhere is the same labelling; one edit is not.
    labels = label_names(12)
    text = f"source_label,target_label\n{labels[0]},a\n{labels[1]},b\n"
    one = fingerprint(info, "--label_map", _csv(tmp_path, "one.csv", text))[0]
    os.makedirs(tmp_path / "moved")
    moved = fingerprint(info, "--label_map", _csv(tmp_path / "moved", "other-name.csv", text))[0]
    edited = fingerprint(info, "--label_map", _csv(tmp_path, "two.csv", text.replace(",b", ",c")))[0]
    assert one == moved != edited


def test_preprocessor_file_edit_changes_it_and_inputs_are_readable(tiny_checkpoint, tmp_path):
    copy = str(tmp_path / "ckpt")
    shutil.copytree(tiny_checkpoint, copy)
    path = os.path.join(copy, PREPROCESSOR_FILE)
    with open(path) as f:
        pre = json.load(f)
    pre["mean"] = pre["mean"] + 1.0
    with open(path, "w") as f:
        json.dump(pre, f)
    base, inputs = fingerprint(inspect_checkpoint(tiny_checkpoint))
    edited, edited_inputs = fingerprint(inspect_checkpoint(copy))
    assert base != edited
    assert edited_inputs["features"]["mean"] == inputs["features"]["mean"] + 1.0
    # What the manifest records: JSON, no paths (the checkpoint's location is not an input).
    text = json.dumps(inputs)
    assert tiny_checkpoint not in text and copy not in text
    assert set(inputs) == {"schema_version", "rules_version", "weights_sha256", "config_sha256", "features",
                           "window", "aggregation", "activation", "labels", "emit_scores", "emit_embeddings",
                           "max_duration_seconds", "precision"}
