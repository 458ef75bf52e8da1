"""Writes a small, randomly initialised AST checkpoint in Hugging Face layout.

Used by the demo and by the tests: a real network with generated weights, so
every part of the pipeline runs for real without a model hub. The weights are
UNTRAINED; the scores they give mean nothing about the audio.

Parameter names and shapes follow transformers' ASTForAudioClassification, so
the same directory loads through MindNLP and through our native backend.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

# AudioSet ontology display names, so demo tables look like real output.
AUDIOSET_STYLE_LABELS = [
    "Speech", "Music", "Silence", "Sine wave", "White noise", "Pink noise",
    "Chirp tone", "Dog", "Bark", "Cat", "Bird", "Bird vocalization, bird call, bird song",
    "Vehicle", "Car", "Engine", "Rain", "Wind", "Thunder", "Water", "Siren",
    "Alarm", "Bell", "Guitar", "Piano", "Drum", "Singing", "Laughter", "Applause",
    "Footsteps", "Door", "Clapping", "Hum", "Buzz", "Whistling", "Beep, bleep",
    "Static", "Noise", "Tick", "Clock", "Telephone", "Crying, sobbing", "Cough",
    "Sneeze", "Breathing", "Snoring", "Insect", "Cricket", "Frog", "Rooster",
    "Cattle, bovinae", "Horse", "Sheep", "Pig", "Goat", "Duck", "Goose",
    "Ocean", "Waves, surf", "Stream", "Waterfall", "Fire", "Crackle",
]


@dataclass(frozen=True)
class TinyASTSpec:
    hidden_size: int = 32
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 64
    max_length: int = 1024
    num_mel_bins: int = 128
    num_labels: int = 12
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    # Std of the random projection matrices. HF initialises with 0.02; in a 2-layer network that
    # leaves every input with the same top label (the residual stream is all bias). 0.2 makes
    # the demo's untrained labels depend on the audio, which tests and the demo report need.
    weight_std: float = 0.2


FULL_SIZE = TinyASTSpec(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_length=1024, num_labels=527, weight_std=0.02)


def patch_grid(spec: TinyASTSpec) -> tuple[int, int]:
    """(frequency patches, time patches), as AST's patch embedding computes them."""
    f = (spec.num_mel_bins - spec.patch_size) // spec.frequency_stride + 1
    t = (spec.max_length - spec.patch_size) // spec.time_stride + 1
    return f, t


def label_names(n: int) -> list[str]:
    names = list(AUDIOSET_STYLE_LABELS[:n])
    names += [f"Class {i}" for i in range(len(names), n)]
    return names


def random_state_dict(spec: TinyASTSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, inter = spec.hidden_size, spec.intermediate_size

    def normal(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def weight(*shape):
        return (rng.standard_normal(shape) * spec.weight_std).astype(np.float32)

    def small(*shape):
        return (rng.standard_normal(shape) * 0.01).astype(np.float32)

    f, t = patch_grid(spec)
    pre = "audio_spectrogram_transformer."
    sd = {
        pre + "embeddings.cls_token": normal(1, 1, h),
        pre + "embeddings.distillation_token": normal(1, 1, h),
        pre + "embeddings.position_embeddings": normal(1, f * t + 2, h),
        pre + "embeddings.patch_embeddings.projection.weight": weight(h, 1, spec.patch_size, spec.patch_size),
        pre + "embeddings.patch_embeddings.projection.bias": small(h),
        pre + "layernorm.weight": np.ones(h, np.float32),
        pre + "layernorm.bias": np.zeros(h, np.float32),
        "classifier.layernorm.weight": np.ones(h, np.float32),
        "classifier.layernorm.bias": np.zeros(h, np.float32),
        # A larger classifier scale spreads the demo scores so top-k differs by input.
        "classifier.dense.weight": (rng.standard_normal((spec.num_labels, h)) * 0.5).astype(np.float32),
        "classifier.dense.bias": small(spec.num_labels),
    }
    for i in range(spec.num_hidden_layers):
        p = f"{pre}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            sd[p + f"attention.attention.{name}.weight"] = weight(h, h)
            sd[p + f"attention.attention.{name}.bias"] = small(h)
        sd[p + "attention.output.dense.weight"] = weight(h, h)
        sd[p + "attention.output.dense.bias"] = small(h)
        sd[p + "intermediate.dense.weight"] = weight(inter, h)
        sd[p + "intermediate.dense.bias"] = small(inter)
        sd[p + "output.dense.weight"] = weight(h, inter)
        sd[p + "output.dense.bias"] = small(h)
        for ln in ("layernorm_before", "layernorm_after"):
            sd[p + f"{ln}.weight"] = np.ones(h, np.float32)
            sd[p + f"{ln}.bias"] = np.zeros(h, np.float32)
    return sd


def hf_config(spec: TinyASTSpec) -> dict:
    labels = label_names(spec.num_labels)
    return {
        "architectures": ["ASTForAudioClassification"],
        "model_type": "audio-spectrogram-transformer",
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "intermediate_size": spec.intermediate_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "patch_size": spec.patch_size,
        "qkv_bias": True,
        "frequency_stride": spec.frequency_stride,
        "time_stride": spec.time_stride,
        "max_length": spec.max_length,
        "num_mel_bins": spec.num_mel_bins,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        "untrained_demo_weights": True,
    }


def preprocessor_config(spec: TinyASTSpec) -> dict:
    return {
        "feature_extractor_type": "ASTFeatureExtractor",
        "feature_size": 1,
        "num_mel_bins": spec.num_mel_bins,
        "max_length": spec.max_length,
        "sampling_rate": 16000,
        "padding_side": "right",
        "padding_value": 0.0,
        "do_normalize": True,
        "mean": -4.2677393,
        "std": 4.5689974,
        "return_attention_mask": False,
    }


def write_checkpoint(directory: str, spec: TinyASTSpec = TinyASTSpec(), seed: int = 0,
                     with_preprocessor_config: bool = True) -> str:
    """Writes config.json, model.safetensors (and preprocessor_config.json)."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config(spec), f, indent=2)
    if with_preprocessor_config:
        with open(os.path.join(directory, "preprocessor_config.json"), "w") as f:
            json.dump(preprocessor_config(spec), f, indent=2)
    save_file(random_state_dict(spec, seed), os.path.join(directory, "model.safetensors"),
              metadata={"format": "pt"})
    return directory
