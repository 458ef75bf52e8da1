"""Audio Spectrogram Transformer written as MindSpore Cells and compiled to a graph.

A one-file model definition in the style of Hugging Face's
``modeling_audio_spectrogram_transformer.py``: every HF module has a Cell here
with the same attribute name, so the parameters of an HF-layout
``model.safetensors`` map onto this network by name, e.g.
``audio_spectrogram_transformer.encoder.layer.0.attention.attention.query.weight``.
The forward pass follows transformers' implementation operation for operation:

    (batch, time, freq) -> unsqueeze(1) -> transpose(2, 3) -> (batch, 1, freq, time)
    -> Conv2d(1, hidden, patch x patch, stride=(frequency_stride, time_stride))
    -> flatten(2).transpose(1, 2) -> [cls, distillation, patches] + position embeddings
    -> N x pre-LN transformer layer (exact erf GELU) -> final LayerNorm
    -> pooled = (h[:, 0] + h[:, 1]) / 2 -> classifier LayerNorm -> Dense -> logits

The network is compiled with ``mindspore.jit`` applied to the top Cell (graph
mode for this Cell only): the process-wide context stays in PyNative mode, so
MindNLP can run in the same process. A graph is compiled per input shape, so
:class:`NativeASTRunner` always feeds exactly ``(batch_size, max_length,
num_mel_bins)`` and pads the last partial chunk with zeros.

This module deliberately imports neither mindnlp, transformers nor torch.

Speed notes. Full-size AST (12 layers, hidden 768, 1214 tokens), batch 4, on the 2-core
AMD EPYC (AVX-512) dev VM, measured with the MindSpore profiler (per-op totals per batch)
and ``benchmarks/bench_model.py``; other tenants' jobs often ran at the same time, so
single runs vary by +-40%. Quiet-machine medians (bench_model.py --repeats 5, 2 threads):
this graph 1.00 clips/s, PyTorch 2.13 eager (sdpa) 0.71, MindNLP PyNative 0.31; with
--threads 1: 0.63 vs PyTorch 0.37.

* Graph mode itself: first working version ~0.6 clips/s (op total ~6.2 s/batch).
* fused q/k/v + ``qkv[0], qkv[1], qkv[2]`` indexing: the StridedSlice kernels cost
  1.38 s/batch (22 %!). Replaced by Unstack: 28 ms. -> ~0.9 clips/s.
* Broadcasting ``Add`` for biases: MindSpore's CPU Add kernel keeps a 16-byte/element
  broadcast index table per instance, so peak RSS was 9.4 GB at batch 4 (3 GB at batch 1).
  ``BiasAdd`` instead: 1.6 GB at batch 4, and Add+BiasAdd time 370 -> 190 ms/batch.
* Head split/merge with Split+Stack / Unstack+Concat instead of reshape+Transpose:
  Transpose keeps an 8-byte/element index table per instance (~1.4 GB at batch 4) and
  cost 206 ms/batch; the replacement costs ~80 ms. Together with BiasAdd: op total
  4.32 -> 4.04 s/batch, ~1.0 clips/s.
* Fused QKV (one (3h, h) GEMM, concatenated at load time): no measurable gain once the
  slicing was fixed (MatMul already runs at ~470 GFLOP/s, near this CPU's peak), so the
  default keeps query/key/value separate (1:1 with HF names); ``fuse_qkv=True`` remains.
* Scaling q by head_dim**-0.5 before q.k^T (exact for power-of-two factors) instead of
  scaling the (b, heads, n, n) scores: saves one 70M-element multiply per layer.
* ``ops.gelu(approximate="none")`` is a composite with a Div; ``x*0.5*(erf(x/sqrt2)+1)``
  written out with a multiply is the same math, one cheaper op. ``erfc`` is slower than
  ``erf`` on CPU. The tanh GELU primitive is both inexact and slower.
* Pre-transposed weights (plain MatMul) vs MatMul(transpose_b=True): same speed.
  ``ops.Dense`` / ``ops.addmm``: no faster, and they keep the broadcast index tables.
* No gain: LayerNorm written out from reductions (22 vs 16 ms), attention split into
  per-head chunks to stay in cache (within noise), ``jit_level="O1"`` (within noise),
  ``memory_optimize_level="O1"`` (no memory change), two half-batches on two threads
  (slower), ``mindspore.runtime.set_cpu_affinity(True)`` (one noisy run, no gain seen).
* Threads: MindSpore already uses all cores by default; its MatMul kept both cores busy
  even with ``threads_num(1)``/``OMP_NUM_THREADS=1``. Erf, LayerNorm and Softmax kernels
  run single-threaded (~1.3 s of ~4 s per batch), which is why the graph keeps only
  ~1.6 of 2 cores busy; they are the remaining cost apart from the GEMMs.

AVX2-only host (2-core AMD EPYC, family 25, flags avx2 fma, no avx512; 2026-11-30). The host
was shared with five other agents' test runs: load average 5-13 on 2 cores while measuring,
so every figure is one interleaved run of two backends and wall-time ratios swing +-50%.
Before this work (issue 13): native 13.1 s vs PyTorch eager 10.8 s per batch of 4 (0.83x).
Single ops, MindSpore graph vs PyTorch eager, then the custom kernel (load ~1.5-2.3):

* erf-GELU 4x1214x3072: MindSpore Erf+Mul+Add 478-531 ms, PyTorch 132-165 ms; the custom
  fused bias+erf-GELU kernel 82-160 ms (max diff vs MindSpore 4.8e-7).
* LayerNorm 4x1214x768: MindSpore 31 ms, PyTorch 2.2-2.4 ms, custom 8.8-10.5 ms (2.4e-6).
* Softmax 4x12x1214x1214: MindSpore 336-624 ms, PyTorch 319-391 ms, custom 361-437 ms
  (7.7e-7); memory-bound on the 280 MB score tensor, so the gain is in CPU time, not wall.
* Custom kernels (``cpu_kernels.py``, ``kernels/ast_cpu_kernels.cc``): ops.Custom "aot"
  C++ compiled with ``g++ -O3 -mavx2 -mfma`` into the per-machine cache on first use (~2 s),
  split over the usable cores with std::thread (no OpenMP: its spinning workers would
  compete with MindSpore's pool); exp by Cody-Waite + degree-6 polynomial, erf by
  Abramowitz-Stegun 7.1.26 (|error| <= 1.5e-7, PyTorch's own vectorised CPU erf). Whole-model
  parity with them: tiny 3.3e-6, full size 2.9e-5 vs MindNLP (tests/test_ast_native.py).
* Whole model, bench_model.py --backends native,pytorch (batch 4, 2 threads, 3 interleaved
  rounds, load average 5.4 -> 9.0, other processes using 1.56-1.76 of 2 cores): native
  0.0586 clips/s vs PyTorch 0.0646 (wall 0.907x), CPU time per batch native 19.1 s vs
  PyTorch 23.4 s (PyTorch needs 1.22x the CPU time). Under that contention the wall ratio
  mostly measures how many runnable threads each process keeps: native kept 0.24-0.44
  cores, PyTorch 0.30-0.43.
* Same command at a quieter moment (load average 2.8; other processes 0.70-0.90 cores):
  native 0.229 clips/s vs PyTorch 0.218 (wall 1.05x), CPU time per batch 20.0 vs 21.3 s
  (1.065x), logits max diff 3.3e-5; native load including compile 19.4 s.
* Still MindSpore's and the remaining gap on AVX2: BatchMatMul for q.k^T (48 x 1214x64 @
  64x1214) runs at about half the GFLOP/s per core of the big MatMuls; PyTorch's sdpa fuses
  q.k^T, softmax and p.v without writing the 70M-element score tensor. A fused attention
  kernel (flash-attention style) is the next lever; not tried.
* Compile cache (``compile_cache.py``): a second process loads the tiny model in 0.1-0.4 s
  (first load 4-12 s under load). End to end (bench_pipeline.py --clips 24 --batch-size 4
  --parts pytorch,pipeline --pipeline-runs 2, full size, load average 12.6 -> 10.3): decode +
  PyTorch eager 424.0 s; pipeline cold (compiles) 337.9 s = 1.255x, warm (cache hit, no
  warm-up batch) 291.9 s = 1.452x. Parts ran one after another, so contention differed.
"""
from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field

import numpy as np

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

__all__ = ["ASTNativeConfig", "ASTForAudioClassification", "NativeASTRunner", "load_native_ast",
           "CheckpointError"]

class CheckpointError(ValueError):
    """The checkpoint directory cannot be loaded into the native AST."""


# --------------------------------------------------------------------------- config


@dataclass
class ASTNativeConfig:
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    patch_size: int = 16
    qkv_bias: bool = True
    frequency_stride: int = 10
    time_stride: int = 10
    max_length: int = 1024
    num_mel_bins: int = 128
    id2label: dict = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def labels(self) -> list[str]:
        return [self.id2label[i] for i in range(self.num_labels)]

    @classmethod
    def from_dict(cls, raw: dict) -> "ASTNativeConfig":
        model_type = raw.get("model_type", "audio-spectrogram-transformer")
        if model_type != "audio-spectrogram-transformer":
            raise CheckpointError(f"config.json has model_type={model_type!r}; expected "
                                  "'audio-spectrogram-transformer'")
        kwargs = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw and k != "id2label"}
        id2label = raw.get("id2label")
        if not id2label:
            n = int(raw.get("num_labels", 2))
            id2label = {i: f"LABEL_{i}" for i in range(n)}
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if sorted(id2label) != list(range(len(id2label))):
            raise CheckpointError("config.json id2label keys must be 0..num_labels-1")
        cfg = cls(id2label=id2label, **kwargs)
        if cfg.hidden_act not in ("gelu",):
            raise CheckpointError(f"hidden_act={cfg.hidden_act!r} is not supported (only exact 'gelu')")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise CheckpointError(f"hidden_size {cfg.hidden_size} is not a multiple of "
                                  f"num_attention_heads {cfg.num_attention_heads}")
        return cfg

    def patch_grid(self) -> tuple[int, int]:
        f = (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1
        t = (self.max_length - self.patch_size) // self.time_stride + 1
        return f, t


# --------------------------------------------------------------------------- building blocks


def _param(shape, dtype=ms.float32) -> Parameter:
    # Lazily initialised placeholder; real values come from the checkpoint.
    return Parameter(initializer("zeros", tuple(shape), dtype), requires_grad=False)


def _same(*shapes_or_types):
    return shapes_or_types[0]


def _custom_op(library: str, function: str) -> ops.Custom:
    """One of the AOT CPU kernels in kernels/ast_cpu_kernels.cc; output shape/dtype = first input's."""
    return ops.Custom(f"{library}:{function}", out_shape=_same, out_dtype=_same, func_type="aot")


class Linear(nn.Cell):
    """torch.nn.Linear: y = x @ weight.T + bias, weight (out, in) as in the checkpoint.

    Inputs of rank 3 are flattened to 2-D so one GEMM covers the whole batch. The bias is
    added with BiasAdd, not a broadcasting Add: MindSpore's CPU Add kernel keeps a
    per-element broadcast index table (16 bytes per output element) alive for every
    instance in the graph, which cost ~6 GB at batch 4 for the full-size model.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=ms.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param((out_features, in_features), dtype)
        self.bias = _param((out_features,), dtype) if bias else None
        self.matmul = ops.MatMul(transpose_b=True)
        self.bias_add = ops.BiasAdd()

    def construct(self, x):
        shape = x.shape
        y = self.matmul(x.reshape(-1, self.in_features), self.weight)
        if self.bias is not None:
            y = self.bias_add(y, self.bias)
        return y.reshape(shape[:-1] + (self.out_features,))


class LayerNorm(nn.Cell):
    """torch.nn.LayerNorm over the last axis, parameters named weight/bias.

    Computed in float32 whatever the compute dtype (mixed precision keeps norms in fp32).
    """

    def __init__(self, hidden_size: int, eps: float, kernels: str | None = None):
        super().__init__()
        self.weight = _param((hidden_size,))
        self.bias = _param((hidden_size,))
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)
        self.custom = kernels is not None
        if self.custom:  # multi-threaded AVX2 kernel (cpu_kernels.py), float32 only
            self.custom_layer_norm = _custom_op(kernels, "LayerNormLastAxis")
            self.eps = Tensor(np.array([eps], np.float32))

    def construct(self, x):
        dtype = x.dtype
        if self.custom:
            return self.custom_layer_norm(x.astype(ms.float32), self.weight, self.bias, self.eps).astype(dtype)
        y, _, _ = self.layer_norm(x.astype(ms.float32), self.weight, self.bias)
        return y.astype(dtype)


class ASTPatchEmbeddings(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32):
        super().__init__()
        p = config.patch_size
        self.hidden_size = config.hidden_size
        self.projection = nn.Conv2d(1, config.hidden_size, kernel_size=(p, p),
                                    stride=(config.frequency_stride, config.time_stride),
                                    pad_mode="valid", has_bias=True, dtype=dtype)
        self.projection.weight = _param((config.hidden_size, 1, p, p), dtype)
        self.projection.bias = _param((config.hidden_size,), dtype)

    def construct(self, input_values):
        # (b, time, freq) -> (b, 1, freq, time)
        x = input_values.expand_dims(1).swapaxes(2, 3)
        emb = self.projection(x)                       # (b, hidden, f, t)
        b = emb.shape[0]
        return emb.reshape(b, self.hidden_size, -1).swapaxes(1, 2)   # (b, f*t, hidden)


class ASTEmbeddings(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32):
        super().__init__()
        h = config.hidden_size
        f, t = config.patch_grid()
        self.cls_token = _param((1, 1, h), dtype)
        self.distillation_token = _param((1, 1, h), dtype)
        self.patch_embeddings = ASTPatchEmbeddings(config, dtype)
        self.position_embeddings = _param((1, f * t + 2, h), dtype)
        self.hidden_size = h
        self.bias_add = ops.BiasAdd()

    def construct(self, input_values):
        embeddings = self.patch_embeddings(input_values)
        b = embeddings.shape[0]
        cls_tokens = ops.broadcast_to(self.cls_token, (b, 1, self.hidden_size))
        dist_tokens = ops.broadcast_to(self.distillation_token, (b, 1, self.hidden_size))
        embeddings = ops.concat((cls_tokens, dist_tokens, embeddings), axis=1)
        # + position_embeddings, as BiasAdd over the flattened (tokens*hidden) axis (see Linear).
        shape = embeddings.shape
        flat = self.bias_add(embeddings.reshape(b, -1), self.position_embeddings.reshape(-1))
        return flat.reshape(shape)


class ASTSelfAttention(nn.Cell):
    """Multi-head self-attention (eager_attention_forward in HF).

    query/key/value are named Cells as in HF, so checkpoints map 1:1. With ``fuse_qkv`` the
    loader concatenates them into one (3*hidden, hidden) projection ``qkv`` (one GEMM).

    Heads are separated with Split(last axis) + Stack(axis 1) and merged with
    Unstack(axis 1) + Concat(last axis) instead of reshape + Transpose: same values, but
    MindSpore's CPU Transpose kernel keeps an 8-byte index per element alive per instance
    (~1.4 GB at batch 4 over 12 layers) and is slower.
    """

    def __init__(self, config: ASTNativeConfig, dtype=ms.float32, fuse_qkv: bool = False,
                 kernels: str | None = None):
        super().__init__()
        h = config.hidden_size
        self.custom_softmax = _custom_op(kernels, "SoftmaxLastAxis") if kernels else None
        self.num_heads = config.num_attention_heads
        self.head_dim = h // self.num_heads
        self.hidden_size = h
        self.fuse_qkv = fuse_qkv
        # HF computes (q @ k^T) * head_dim**-0.5. Scaling q first touches n*h elements
        # instead of heads*n*n; for head_dim a power of four (64, 16, ...) the factor is a
        # power of two and the result is bit-identical.
        self.scaling = float(self.head_dim) ** -0.5
        if fuse_qkv:
            self.qkv = Linear(h, 3 * h, bias=config.qkv_bias, dtype=dtype)
            self.split_heads = ops.Split(axis=-1, output_num=3 * self.num_heads)
        else:
            self.query = Linear(h, h, bias=config.qkv_bias, dtype=dtype)
            self.key = Linear(h, h, bias=config.qkv_bias, dtype=dtype)
            self.value = Linear(h, h, bias=config.qkv_bias, dtype=dtype)
            self.split_heads = ops.Split(axis=-1, output_num=self.num_heads)
        self.stack_heads = ops.Stack(axis=1)        # heads x (b, n, d) -> (b, heads, n, d)
        self.unstack_heads = ops.Unstack(axis=1)    # (b, heads, n, d) -> heads x (b, n, d)
        self.merge_heads = ops.Concat(axis=-1)      # heads x (b, n, d) -> (b, n, hidden)
        self.qk_matmul = ops.BatchMatMul(transpose_b=True)
        self.pv_matmul = ops.BatchMatMul()

    def construct(self, hidden_states):
        nh = self.num_heads
        if self.fuse_qkv:
            parts = self.split_heads(self.qkv(hidden_states))
            q = self.stack_heads(parts[:nh])
            k = self.stack_heads(parts[nh:2 * nh])
            v = self.stack_heads(parts[2 * nh:])
        else:
            q = self.stack_heads(self.split_heads(self.query(hidden_states)))
            k = self.stack_heads(self.split_heads(self.key(hidden_states)))
            v = self.stack_heads(self.split_heads(self.value(hidden_states)))
        scores = self.qk_matmul(q * self.scaling, k)                 # (b, heads, n, n)
        if self.custom_softmax is not None:
            probs = self.custom_softmax(scores)
        else:
            probs = ops.softmax(scores.astype(ms.float32), axis=-1).astype(q.dtype)
        context = self.pv_matmul(probs, v)                           # (b, heads, n, d)
        return self.merge_heads(self.unstack_heads(context))         # (b, n, hidden)


class ASTSelfOutput(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size, dtype=dtype)

    def construct(self, hidden_states):
        return self.dense(hidden_states)


class ASTAttention(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32, fuse_qkv: bool = False,
                 kernels: str | None = None):
        super().__init__()
        self.attention = ASTSelfAttention(config, dtype, fuse_qkv, kernels)
        self.output = ASTSelfOutput(config, dtype)

    def construct(self, hidden_states):
        return self.output(self.attention(hidden_states))


_INV_SQRT2 = 1.0 / math.sqrt(2.0)


class ASTIntermediate(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32, kernels: str | None = None):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size, dtype=dtype)
        self.intermediate_size = config.intermediate_size
        # fused bias + erf-GELU in one multi-threaded pass (cpu_kernels.py)
        self.bias_gelu = _custom_op(kernels, "BiasGeluErf") if kernels else None

    def construct(self, hidden_states):
        if self.bias_gelu is not None:
            shape = hidden_states.shape
            d = self.dense
            y = self.bias_gelu(d.matmul(hidden_states.reshape(-1, d.in_features), d.weight), d.bias)
            return y.reshape(shape[:-1] + (self.intermediate_size,))
        x = self.dense(hidden_states)
        return x * 0.5 * (ops.erf(x * _INV_SQRT2) + 1.0)   # exact (erf) GELU


class ASTOutput(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size, dtype=dtype)

    def construct(self, hidden_states, input_tensor):
        return self.dense(hidden_states) + input_tensor


class ASTLayer(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32, fuse_qkv: bool = False,
                 kernels: str | None = None):
        super().__init__()
        self.attention = ASTAttention(config, dtype, fuse_qkv, kernels)
        self.intermediate = ASTIntermediate(config, dtype, kernels)
        self.output = ASTOutput(config, dtype)
        self.layernorm_before = LayerNorm(config.hidden_size, config.layer_norm_eps, kernels)
        self.layernorm_after = LayerNorm(config.hidden_size, config.layer_norm_eps, kernels)

    def construct(self, hidden_states):
        attention_output = self.attention(self.layernorm_before(hidden_states))
        hidden_states = attention_output + hidden_states
        layer_output = self.intermediate(self.layernorm_after(hidden_states))
        return self.output(layer_output, hidden_states)


class ASTEncoder(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32, fuse_qkv: bool = False,
                 kernels: str | None = None):
        super().__init__()
        self.layer = nn.CellList([ASTLayer(config, dtype, fuse_qkv, kernels)
                                  for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states):
        for layer_module in self.layer:
            hidden_states = layer_module(hidden_states)
        return hidden_states


class ASTModel(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32, fuse_qkv: bool = False,
                 kernels: str | None = None):
        super().__init__()
        self.embeddings = ASTEmbeddings(config, dtype)
        self.encoder = ASTEncoder(config, dtype, fuse_qkv, kernels)
        self.layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps, kernels)

    def construct(self, input_values):
        sequence_output = self.layernorm(self.encoder(self.embeddings(input_values)))
        return (sequence_output[:, 0] + sequence_output[:, 1]) / 2


class ASTMLPHead(nn.Cell):
    def __init__(self, config: ASTNativeConfig, dtype=ms.float32, kernels: str | None = None):
        super().__init__()
        self.layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps, kernels)
        self.dense = Linear(config.hidden_size, config.num_labels, dtype=dtype)

    def construct(self, hidden_state):
        return self.dense(self.layernorm(hidden_state))


class ASTForAudioClassification(nn.Cell):
    """Returns (logits, pooled), both float32.

    ``kernels``: path of the compiled AVX2 kernel library (cpu_kernels.kernel_library()) to
    use for LayerNorm, Softmax and bias+GELU instead of MindSpore's CPU kernels; CPU and
    float32 only. None: MindSpore's kernels everywhere."""

    def __init__(self, config: ASTNativeConfig, dtype=ms.float32, fuse_qkv: bool = False,
                 kernels: str | None = None):
        super().__init__()
        if kernels is not None and dtype != ms.float32:
            raise ValueError("the custom CPU kernels are float32 only")
        self.compute_dtype = dtype
        self.audio_spectrogram_transformer = ASTModel(config, dtype, fuse_qkv, kernels)
        self.classifier = ASTMLPHead(config, dtype, kernels)

    def construct(self, input_values):
        pooled = self.audio_spectrogram_transformer(input_values.astype(self.compute_dtype))
        logits = self.classifier(pooled)
        return logits.astype(ms.float32), pooled.astype(ms.float32)


# --------------------------------------------------------------------------- checkpoint mapping


def hf_parameter_shapes(config: ASTNativeConfig) -> dict[str, tuple[int, ...]]:
    """The HF ASTForAudioClassification state dict (name -> shape) this network accepts."""
    h, inter, p = config.hidden_size, config.intermediate_size, config.patch_size
    f, t = config.patch_grid()
    pre = "audio_spectrogram_transformer."
    shapes = {
        pre + "embeddings.cls_token": (1, 1, h),
        pre + "embeddings.distillation_token": (1, 1, h),
        pre + "embeddings.position_embeddings": (1, f * t + 2, h),
        pre + "embeddings.patch_embeddings.projection.weight": (h, 1, p, p),
        pre + "embeddings.patch_embeddings.projection.bias": (h,),
        pre + "layernorm.weight": (h,),
        pre + "layernorm.bias": (h,),
        "classifier.layernorm.weight": (h,),
        "classifier.layernorm.bias": (h,),
        "classifier.dense.weight": (config.num_labels, h),
        "classifier.dense.bias": (config.num_labels,),
    }
    for i in range(config.num_hidden_layers):
        lp = f"{pre}encoder.layer.{i}."
        for name in ("query", "key", "value"):
            shapes[lp + f"attention.attention.{name}.weight"] = (h, h)
            if config.qkv_bias:
                shapes[lp + f"attention.attention.{name}.bias"] = (h,)
        shapes[lp + "attention.output.dense.weight"] = (h, h)
        shapes[lp + "attention.output.dense.bias"] = (h,)
        shapes[lp + "intermediate.dense.weight"] = (inter, h)
        shapes[lp + "intermediate.dense.bias"] = (inter,)
        shapes[lp + "output.dense.weight"] = (h, inter)
        shapes[lp + "output.dense.bias"] = (h,)
        for ln in ("layernorm_before", "layernorm_after"):
            shapes[lp + f"{ln}.weight"] = (h,)
            shapes[lp + f"{ln}.bias"] = (h,)
    return shapes


def _read_safetensors(checkpoint_dir: str) -> dict[str, np.ndarray]:
    path = os.path.join(checkpoint_dir, "model.safetensors")
    if not os.path.isfile(path):
        present = sorted(os.listdir(checkpoint_dir)) if os.path.isdir(checkpoint_dir) else []
        others = [n for n in present if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack"))
                  or n.endswith(".safetensors.index.json")]
        hint = (f" Found {others}: only a single 'model.safetensors' file is supported by the native "
                "backend (no pickled PyTorch weights, no sharded checkpoints); convert it with "
                "safetensors first.") if others else ""
        raise CheckpointError(f"No model.safetensors in {checkpoint_dir!r}; the native AST backend loads "
                              f"safetensors weights only.{hint}")
    from safetensors.numpy import load_file
    try:
        return load_file(path)
    except Exception as exc:  # bf16 tensors etc. numpy cannot represent
        raise CheckpointError(f"Cannot read {path} as numpy safetensors: {exc}") from exc


def _validate_state(state: dict[str, np.ndarray], config: ASTNativeConfig) -> None:
    expected = hf_parameter_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing parameters ({len(missing)}): {missing[:10]}"
                        + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected parameters ({len(unexpected)}): {unexpected[:10]}"
                        + (" ..." if len(unexpected) > 10 else ""))
    for name in sorted(set(expected) & set(state)):
        if tuple(state[name].shape) != expected[name]:
            problems.append(f"parameter {name!r} has shape {tuple(state[name].shape)}, "
                            f"expected {expected[name]} from config.json")
        elif not np.issubdtype(state[name].dtype, np.floating):
            problems.append(f"parameter {name!r} has non-float dtype {state[name].dtype}")
    if problems:
        raise CheckpointError("Checkpoint does not match the AST architecture in config.json: "
                              + "; ".join(problems))


def _native_state(state: dict[str, np.ndarray], config: ASTNativeConfig, fuse_qkv: bool) -> dict[str, np.ndarray]:
    """HF names -> this network's names (identical except for the optional fused qkv)."""
    out = {k: v for k, v in state.items()}
    if fuse_qkv:
        for i in range(config.num_hidden_layers):
            p = f"audio_spectrogram_transformer.encoder.layer.{i}.attention.attention."
            out[p + "qkv.weight"] = np.concatenate([out.pop(p + f"{n}.weight") for n in ("query", "key", "value")], 0)
            if config.qkv_bias:
                out[p + "qkv.bias"] = np.concatenate([out.pop(p + f"{n}.bias") for n in ("query", "key", "value")], 0)
    return out


def load_state_into(net: nn.Cell, state: dict[str, np.ndarray]) -> None:
    """Sets every parameter of ``net`` from ``state`` by (hierarchical) name; strict."""
    params = dict(net.parameters_and_names())
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"parameter names do not match the network: missing={missing[:10]}, "
                              f"unexpected={unexpected[:10]}")
    for name, param in params.items():
        value = state[name]
        if tuple(value.shape) != tuple(param.shape):
            raise CheckpointError(f"parameter {name!r} has shape {tuple(value.shape)}, "
                                  f"network expects {tuple(param.shape)}")
        param.set_data(Tensor(np.ascontiguousarray(value, dtype=np.float32), dtype=param.dtype))
        param.name = name  # unique graph parameter names = HF names


# --------------------------------------------------------------------------- device / threads


_DEVICE_TARGETS = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}
_PRECISIONS = {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}
_setup_lock = threading.Lock()


def _select_device(device: str, device_id: int | None = None) -> str:
    target = _DEVICE_TARGETS.get(device.lower())
    if target is None:
        raise ValueError(f"device must be one of {sorted(_DEVICE_TARGETS)}, got {device!r}")
    with _setup_lock:
        current = ms.get_context("device_target")
        try:
            if device_id is None:
                ms.set_device(target)
            else:
                ms.set_device(target, int(device_id))
        except RuntimeError as exc:
            # set_device can only be called once per process / before the runtime starts.
            if current != target:
                raise RuntimeError(f"MindSpore already runs on {current} in this process; cannot switch to "
                                   f"{target}: {exc}") from exc
    return target


def set_cpu_threads(num_threads: int) -> bool:
    """Sets MindSpore's CPU kernel thread pool size (once per process, before kernels run).

    Returns False when it was already configured (the earlier setting stays)."""
    from mindspore._c_expression import RuntimeConf
    with _setup_lock:
        if RuntimeConf.get_instance().is_op_threads_num_configured():
            return False
        ms.device_context.cpu.op_tuning.threads_num(int(num_threads))
        return True


# --------------------------------------------------------------------------- runner


def _compiled_phases(net: nn.Cell) -> int:
    """Graphs MindSpore holds for ``net``'s jitted construct (phase names carry id(net))."""
    try:
        from mindspore.common.api import ms_compile_cache
    except ImportError:  # pragma: no cover - internal name moved
        return -1
    tag = f".{net.create_time}"
    ident = f".{id(net)}."
    return sum(1 for phase in list(ms_compile_cache) if ident in phase and tag in phase)


class NativeASTRunner:
    """Holds one compiled model. Thread-safe predict (guarded by a lock)."""

    def __init__(self, net: ASTForAudioClassification, config: ASTNativeConfig, batch_size: int,
                 device_target: str, precision: str):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.net = net
        self.config = config
        self.labels: list[str] = config.labels
        self.batch_size = int(batch_size)
        self.max_length = config.max_length
        self.num_mel_bins = config.num_mel_bins
        self.hidden_size = config.hidden_size
        self.num_labels = config.num_labels
        self.device_target = device_target
        self.precision = precision
        self._lock = threading.Lock()
        self._shapes_seen: set[tuple] = set()
        self.cpu_kernels: str | None = None
        # compile_cache.CompileCache of this model, or None; while _cache_pending, the first
        # batch compiles inside the cache (loading the saved graph instead of building it).
        self.compile_cache = None
        self._cache_pending = False
        # Graph mode for this Cell only; the global context stays PyNative.
        self._forward = ms.jit(net)

    def input_shape(self) -> tuple[int, int]:
        """(max_length, num_mel_bins): what each example must be (a method, so proxies forward it)."""
        return self.max_length, self.num_mel_bins

    @property
    def compile_count(self) -> int:
        """Graphs compiled for this runner: distinct input signatures that reached the
        jitted network (it only ever sees (batch_size, max_length, num_mel_bins) float32),
        cross-checked against MindSpore's own compile cache when that is readable."""
        ms_count = _compiled_phases(self.net)
        return max(len(self._shapes_seen), ms_count)

    @property
    def graph_cache_entries(self) -> int:
        """Entries in MindSpore's jit compile cache for this network (-1 if unreadable)."""
        return _compiled_phases(self.net)

    def _run_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._shapes_seen.add((batch.shape, str(batch.dtype)))
        if self._cache_pending:
            return self._run_first_batch_cached(batch)
        logits, pooled = self._forward(Tensor(batch))
        return logits.asnumpy(), pooled.asnumpy()

    def _run_first_batch_cached(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache = self.compile_cache
        try:
            with cache.compiling():
                logits, pooled = self._forward(Tensor(batch))
                result = logits.asnumpy(), pooled.asnumpy()
        except Exception as exc:
            if cache.status != "hit":
                raise
            # The saved graph failed to load (compiling() wiped it): build it afresh, once.
            import logging
            logging.getLogger(__name__).warning("cached graph in %s failed (%s); compiling afresh",
                                                cache.directory, exc)
            self._forward = ms.jit(self.net)
            with cache.compiling():
                logits, pooled = self._forward(Tensor(batch))
                result = logits.asnumpy(), pooled.asnumpy()
            cache.status = "stale"
        self._cache_pending = False
        return result

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """features float32 (n, max_length, num_mel_bins), n >= 1 ->
        (logits (n, num_labels) float32, pooled (n, hidden_size) float32)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (self.max_length, self.num_mel_bins) or x.shape[0] < 1:
            raise ValueError(f"features must have shape (n>=1, {self.max_length}, {self.num_mel_bins}), "
                             f"got {x.shape}")
        n, bs = x.shape[0], self.batch_size
        logits = np.empty((n, self.num_labels), np.float32)
        pooled = np.empty((n, self.hidden_size), np.float32)
        with self._lock:
            for start in range(0, n, bs):
                chunk = x[start:start + bs]
                m = chunk.shape[0]
                if m < bs:  # zero-pad so the compiled graph never sees a new shape
                    padded = np.zeros((bs,) + x.shape[1:], np.float32)
                    padded[:m] = chunk
                    chunk = padded
                lg, pl = self._run_batch(np.ascontiguousarray(chunk))
                logits[start:start + m] = lg[:m]
                pooled[start:start + m] = pl[:m]
        return logits, pooled


def load_native_ast(checkpoint_dir: str, batch_size: int = 8, device: str = "cpu", precision: str = "fp32",
                    *, num_threads: int | None = None, fuse_qkv: bool = False, device_id: int | None = None,
                    cpu_kernels: bool = True, compile_cache: bool = True) -> NativeASTRunner:
    """Reads config.json + model.safetensors from ``checkpoint_dir``, builds the Cells, loads
    the weights by name (strict: missing / unexpected / mis-shaped parameters raise
    :class:`CheckpointError`), compiles the graph and runs one warm-up batch.

    ``num_threads`` (CPU only): size of MindSpore's CPU kernel thread pool; it can be set
    once per process, before the first kernel runs, and is ignored (with the earlier value
    kept) after that.

    ``cpu_kernels`` (CPU, fp32): use the AVX2 kernels of cpu_kernels.py (built into the
    per-machine cache on first use) for LayerNorm, Softmax and bias+GELU; where they cannot be
    built the reason is logged and MindSpore's own kernels run instead.

    ``compile_cache``: keep the compiled graph in the per-machine cache (compile_cache.py),
    keyed by weights digest, batch size, device and precision. On a hit no warm-up batch runs:
    the saved graph loads with the first batch (``runner.compile_cache.status`` is 'hit'
    once it did, 'stale' if it had to be rebuilt).
    """
    if device.lower() not in _DEVICE_TARGETS:
        raise ValueError(f"device must be one of {sorted(_DEVICE_TARGETS)}, got {device!r}")
    precision = precision.lower()
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
    if device.lower() == "cpu" and precision != "fp32":
        raise ValueError(f"precision {precision!r} is only supported on gpu/ascend; use fp32 on cpu")
    config_path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"No config.json in {checkpoint_dir!r}")
    with open(config_path) as f:
        config = ASTNativeConfig.from_dict(json.load(f))
    state = _read_safetensors(checkpoint_dir)
    _validate_state(state, config)

    target = _select_device(device, device_id)
    if target == "CPU" and num_threads:
        set_cpu_threads(num_threads)

    dtype = _PRECISIONS[precision]
    kernels = None
    if cpu_kernels and target == "CPU" and precision == "fp32":
        from transforms.model.cpu_kernels import kernel_library

        kernels = kernel_library()
    net = ASTForAudioClassification(config, dtype=dtype, fuse_qkv=fuse_qkv, kernels=kernels)
    net.set_train(False)
    load_state_into(net, _native_state(state, config, fuse_qkv))
    del state
    for p in net.get_parameters():
        p.requires_grad = False

    runner = NativeASTRunner(net, config, batch_size, target, precision)
    runner.cpu_kernels = kernels
    from transforms.model import compile_cache as cc

    if compile_cache and cc.enabled() and cc.first_in_process():
        runner.compile_cache = cc.CompileCache(cc.model_key(
            checkpoint_dir, batch_size=batch_size, device=target.lower(), precision=precision,
            kernels=kernels, fuse_qkv=fuse_qkv))
        runner._cache_pending = True
        valid, _ = runner.compile_cache.is_valid()
        if valid:   # the first batch loads the saved graph: no warm-up batch needed
            runner.compile_cache.status = "hit"
            return runner
    runner.predict(np.zeros((1, config.max_length, config.num_mel_bins), np.float32))  # compile + warm-up
    return runner
