"""Every malformed safetensors header is refused at launch with exit code 2 and one line
(transforms/io/checkpoint.py check_safetensors_header), never an uncaught exception."""
import json
import os
import shutil
import struct

import pytest

from pipeline.main import main
from transforms.io.checkpoint import CheckpointError, inspect_checkpoint


def _split(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _first_tensor(header):
    return min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def _second_tensor(header):
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])[1]


def _set(header, name, key, value):
    header[name] = dict(header[name], **{key: value})
    return header


# (what is wrong, how to make it so: (header, data) -> (header or raw JSON text, data), message)
MALFORMED = {
    "entry_not_an_object": (lambda h, d: ({**h, "x": 5}, d), "entry 'x' is a int"),
    "header_a_list": (lambda h, d: (list(h), d), "a JSON list, not an object"),
    "header_a_number": (lambda h, d: (7, d), "a JSON int, not an object"),
    "metadata_not_strings": (lambda h, d: ({**h, "__metadata__": {"format": 1}}, d), "__metadata__"),
    "unknown_dtype": (lambda h, d: (_set(h, _first_tensor(h), "dtype", "F17"), d), "dtype 'F17'"),
    "shape_not_a_list": (lambda h, d: (_set(h, _first_tensor(h), "shape", "12x8"), d), "shape '12x8'"),
    "negative_dim": (lambda h, d: (_set(h, _first_tensor(h), "shape", [-1, 4]), d), "shape [-1, 4]"),
    "offsets_missing": (lambda h, d: (_set(h, _first_tensor(h), "data_offsets", None), d), "data_offsets None"),
    "offsets_reversed": (lambda h, d: (_set(h, _first_tensor(h), "data_offsets", [8, 4]), d), "data_offsets [8, 4]"),
    "size_mismatch": (lambda h, d: (_set(h, _first_tensor(h), "shape", [1]), d), "its data_offsets give"),
    "overlapping": (lambda h, d: (_set(h, _second_tensor(h), "data_offsets",
                                       [h[_second_tensor(h)]["data_offsets"][0] - 4,
                                        h[_second_tensor(h)]["data_offsets"][1] - 4]), d), "overlaps"),
    "past_the_file": (lambda h, d: (_set(h, _second_tensor(h), "data_offsets",
                                         [len(d) + 4, len(d) + 4 + h[_second_tensor(h)]["data_offsets"][1]
                                          - h[_second_tensor(h)]["data_offsets"][0]]), d), "truncated"),
    "trailing_bytes": (lambda h, d: (h, d + b"\0" * 16), "16 bytes after the last tensor"),
}


@pytest.fixture(scope="module")
def tiny_header(tiny_checkpoint):
    return _split(os.path.join(tiny_checkpoint, "model.safetensors"))


def _checkpoint_with(tmp_path, tiny_checkpoint, weights: bytes):
    d = tmp_path / "ckpt"
    d.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(os.path.join(tiny_checkpoint, name), d)
    (d / "model.safetensors").write_bytes(weights)
    return str(d)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_header_is_a_checkpoint_error(case, tiny_header, tiny_checkpoint, tmp_path):
    make, message = MALFORMED[case]
    header, data = make(json.loads(json.dumps(tiny_header[0])), tiny_header[1])
    d = _checkpoint_with(tmp_path, tiny_checkpoint, _join(header, data))
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        inspect_checkpoint(d)


def test_a_header_longer_than_the_file_is_refused(tiny_header, tiny_checkpoint, tmp_path):
    weights = _join(*tiny_header)
    d = _checkpoint_with(tmp_path, tiny_checkpoint, struct.pack("<Q", len(weights)) + weights[8:])
    with pytest.raises(CheckpointError, match="bad header length"):
        inspect_checkpoint(d)


def test_the_untouched_header_passes(tiny_header, tiny_checkpoint, tmp_path):
    assert inspect_checkpoint(_checkpoint_with(tmp_path, tiny_checkpoint, _join(*tiny_header))).labels


def test_launch_with_a_non_object_entry_exits_2_with_one_line(tiny_header, tiny_checkpoint, tmp_path, capsys):
    header, data = tiny_header
    d = _checkpoint_with(tmp_path, tiny_checkpoint, _join({**header, "x": 5}, data))
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    code = main(["--input", str(audio), "--output", str(tmp_path / "out"), "--model", d])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: --model: model.safetensors in ") and "'x'" in err[0], err
