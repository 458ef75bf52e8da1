"""AST through MindNLP on MindSpore (PyNative): the reference backend.

Imported only inside model loading. ``import mindnlp`` redirects ``import torch``
to MindNLP's MindSpore shim for the whole process; if real torch was imported
earlier (apache_beam.ml.inference imports it when installed), transformers then
mixes the two and fails. We therefore drop real torch from sys.modules before
importing MindNLP: objects already holding it keep working, and every later
``import torch`` gets the shim.
"""
from __future__ import annotations

import importlib.util
import sys
import threading

import numpy as np

from transforms.model.runtime_env import protobuf_backend_problem


# What the optional extra adds (setup.py's MINDNLP list), by import name; the base install, which
# the native backend needs, has none of them.
EXTRA_MODULES = ("mindnlp", "transformers", "torch")
INSTALL_HINT = "pip install '.[mindnlp]' (the package's mindnlp extra)"


def missing_packages() -> list[str]:
    """The extra's modules this Python cannot import; found without importing them (importing
    mindnlp redirects torch for the whole process)."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            found = name in sys.modules or importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def _forget_real_torch() -> None:
    torch = sys.modules.get("torch")
    if torch is None or "mindtorch" in repr(getattr(torch, "__spec__", "")) or "mindtorch" in repr(torch):
        return
    for name in list(sys.modules):
        if name == "torch" or name.startswith(("torch.", "torchaudio", "torchvision", "functorch")):
            del sys.modules[name]


def import_mindnlp_transformers():
    problem = protobuf_backend_problem()
    if problem:
        raise RuntimeError(problem)
    missing = missing_packages()
    if missing:
        raise ImportError(f"--backend mindnlp needs {', '.join(missing)}, not installed here: {INSTALL_HINT}")
    _forget_real_torch()
    import mindnlp  # noqa: F401  (installs the torch redirect)
    import torch
    import transformers

    return torch, transformers


class MindNLPASTRunner:
    """Same interface as transforms.model.ast_native.NativeASTRunner."""

    def __init__(self, checkpoint_dir: str, batch_size: int = 8):
        torch, transformers = import_mindnlp_transformers()
        self._torch = torch
        self._model = transformers.ASTForAudioClassification.from_pretrained(checkpoint_dir)
        self._model.eval()
        config = self._model.config
        self.labels = [config.id2label[i] for i in range(len(config.id2label))]
        self.batch_size = batch_size
        self.max_length = config.max_length
        self.num_mel_bins = config.num_mel_bins
        self.hidden_size = config.hidden_size
        self._lock = threading.Lock()

    def input_shape(self) -> tuple[int, int]:
        return self.max_length, self.num_mel_bins

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = np.asarray(features, dtype=np.float32)
        logits, pooled = [], []
        with self._lock, self._torch.no_grad():
            for start in range(0, len(features), self.batch_size):
                x = self._torch.tensor(features[start:start + self.batch_size])
                pooler = self._model.audio_spectrogram_transformer(x).pooler_output
                logits.append(self._model.classifier(pooler).numpy())
                pooled.append(pooler.numpy())
        return np.concatenate(logits).astype(np.float32), np.concatenate(pooled).astype(np.float32)
