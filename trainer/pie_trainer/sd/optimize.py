"""Fused CUDA kernels for an sd bundle's graphs (`--optimize`): ONNX Runtime's transformer
optimizer rewrites each float32 graph as exported (graph rewriting only, no ONNX Runtime
session), then converts it to float16 weights with float32 graph inputs and outputs, so the
bundle contract (schema/README.md, "Backbone sd") is unchanged.

The rewritten graphs hold com.microsoft contrib operators (GroupNorm, NhwcConv,
BiasSplitGelu, ...) that ONNX Runtime implements for CUDA only; the bundle records that in
`model.optimized`, and the engine refuses such a bundle on the CPU.

What fires depends on the subgraphs the exporter wrote (checked with diffusers 0.42,
transformers 5.24, torch 2.15, ONNX Runtime 1.31), by graph (the optimizer's model type):

- unet (unet): every self-attention (MultiHeadAttention with Q, K and V packed) and
  cross-attention (MultiHeadAttention with K and V packed); every GroupNorm (SkipGroupNorm
  where a residual Add precedes it), with its SiLU; the GEGLU of every feed-forward
  (BiasSplitGelu); every Conv (NhwcConv); LayerNorm after a residual (SkipLayerNormalization);
  bias + residual (BiasAdd).
- vae_encoder, vae_decoder (vae): GroupNorm / SkipGroupNorm and NhwcConv; the mid-block
  attention (Attention) where the VAE was exported with diffusers' classic attention processor,
  whose subgraph is the one the optimizer knows (export_for_fusion sets it).
- text_encoder (clip): SkipLayerNormalization and QuickGelu; attention stays unfused
  (transformers 5's causal mask is not the subgraph the optimizer looks for).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core.errors import BadInput

# The optimizer's model type for each graph of the bundle.
MODEL_TYPES = {"text_encoder": "clip", "unet": "unet", "vae_encoder": "vae", "vae_decoder": "vae"}
TOOL = "onnxruntime-transformers"    # model.optimized.by in bundle.json
CONTRIB = "com.microsoft"
CHOICES = ("auto", "on", "off")


def resolve(requested: str, precision: str, on_cuda: bool) -> bool:
    """Whether to optimize. auto: for float16 exports made on CUDA (they run on CUDA only anyway,
    and the CUDA machine that made them is where they can be checked). on: any float16 export.
    A float32 export is the one that runs on the CPU, so `on` refuses it instead of silently making
    a float32 bundle that is CUDA-only."""
    if requested == "off":
        return False
    if requested == "auto":
        return precision == "float16" and on_cuda
    if precision != "float16":
        raise BadInput("--optimize on fuses the graphs into ONNX Runtime operators that run on CUDA only, like "
                       "float16 weights; this export is float32 (the one that runs on the CPU): add "
                       "--export-precision fp16, or leave --optimize out")
    return True


def runs_here() -> bool:
    """Whether this ONNX Runtime can run fused graphs (its CUDA provider)."""
    import onnxruntime
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def version() -> str:
    import onnxruntime
    return str(onnxruntime.__version__)


def fused_counts(proto: Any) -> dict[str, int]:
    """Contrib operators of a graph, by type: what the fusions made."""
    return dict(sorted(Counter(n.op_type for n in proto.graph.node if n.domain == CONTRIB).items()))


@contextlib.contextmanager
def _heads_from_one_element_arrays() -> Iterator[None]:
    """ONNX Runtime 1.30/1.31's UNet and VAE attention fusions read a graph's head count with int()
    of a one-element array, which NumPy 2.4 refuses (TypeError), and so never fuse a diffusers
    model exported here. For the optimizer's run, the head count is read from the element
    instead (the UNet's: the Concat before Q's Reshape; the VAE's: the same, and the hidden size
    from Q's bias); the rest of each fusion is the optimizer's own."""
    import numpy as np
    import onnxruntime.transformers.optimizer  # noqa: F401 - puts its modules on sys.path

    def element(model: Any, name: str) -> int:
        v = model.get_constant_value(name)
        return max(0, int(v.reshape(-1)[0])) if isinstance(v, np.ndarray) and v.size == 1 else 0

    unet = sys.modules["fusion_attention_unet"].FusionAttentionUnet
    vae = sys.modules["fusion_attention_vae"].FusionAttentionVae
    unet_heads, vae_heads = unet.get_num_heads, vae.get_num_heads_and_hidden_size

    def unet_num_heads(self: Any, reshape_q: Any, is_torch2: bool = False) -> int:
        if not is_torch2:
            return int(unet_heads(self, reshape_q, is_torch2))
        shape = self.model.get_parent(reshape_q, 1)
        if shape is None or shape.op_type != "Concat" or len(shape.input) != 4:
            return 0
        return element(self.model, shape.input[2])

    def vae_heads_and_hidden(self: Any, reshape_q: Any, add_q: Any) -> tuple[int, int]:
        shape = self.model.get_parent(reshape_q, 1)
        heads = element(self.model, shape.input[2]) if shape is not None and len(shape.input) == 4 else 0
        _, bias = self.model.get_constant_input(add_q)
        if heads <= 0 or not isinstance(bias, np.ndarray) or bias.ndim != 1:
            return self.num_heads, self.hidden_size
        return heads, int(bias.shape[0])

    unet.get_num_heads, vae.get_num_heads_and_hidden_size = unet_num_heads, vae_heads_and_hidden
    try:
        yield
    finally:
        unet.get_num_heads, vae.get_num_heads_and_hidden_size = unet_heads, vae_heads


@contextlib.contextmanager
def _working_folder(folder: Path) -> Iterator[None]:
    """The process's working folder for the block (contextlib.chdir is Python 3.11's)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def _timestep_nodes(proto: Any) -> list[str]:
    """The UNet's sinusoidal timestep embedding: the nodes fed by the `timestep` input up to the first
    matrix product. They stay float32, as diffusers computes them in a half-precision UNet too
    (sin and cos of t x frequency lose their phase in float16 for t near 1000)."""
    consumers: dict[str, list[Any]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    names: list[str] = []
    seen: set[str] = set()
    todo = ["timestep"]
    while todo:
        for n in consumers.get(todo.pop(), []):
            if n.name in seen or n.op_type in ("MatMul", "Gemm"):
                continue
            seen.add(n.name)
            names.append(n.name)
            todo.extend(n.output)
    return names


def export_for_fusion(parts: Any) -> None:
    """Before exporting the graphs to fuse: the VAE's attention as diffusers' classic processor
    computes it (the same values), whose exported subgraph the VAE attention fusion matches;
    PyTorch's fused attention exports as one it does not."""
    from diffusers.models.attention_processor import AttnProcessor
    parts.vae.set_attn_processor(AttnProcessor())


def optimize_graph(folder: Path, graph: str, made: list[str], external_limit: int,
                   heads: int = 0, hidden: int = 0) -> tuple[list[str], dict[str, int]]:
    """Rewrites the float32 graph `made[0]` (with its external data, if any) in `folder` in place:
    the optimizer's fusions for `graph`'s model type, then float16 with float32 inputs and outputs.
    `heads` and `hidden` (text encoder: its config's) help the CLIP attention fusion; 0 = read them
    from the graph (the UNet's differ by block in SD 2.x). Returns the files it made (the graph, and
    its .data when the weights pass `external_limit` bytes) and the fused operator counts."""
    from onnx.external_data_helper import load_external_data_for_model
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    import onnx

    model_type = MODEL_TYPES[graph]
    options = FusionOptions(model_type)
    # A large graph's weights stay in its .data file while the optimizer walks and shape-infers the
    # graph (it copies the model several times): the fusions read the weights they rewrite from
    # the file (relative to the working folder), the rest is read in before the float16 conversion.
    proto = onnx.load(str(folder / made[0]), load_external_data=False)
    # tqdm bars and the optimizer's own notes would land in the trainer's log.
    with _heads_from_one_element_arrays(), contextlib.redirect_stderr(io.StringIO()), \
            _working_folder(folder):
        m = optimize_model(proto, model_type=model_type, num_heads=heads, hidden_size=hidden,
                           opt_level=0, optimization_options=options, use_gpu=True)
        load_external_data_for_model(m.model, ".")
        keep = _timestep_nodes(m.model) if graph == "unet" else []
        m.convert_float_to_float16(keep_io_types=True, node_block_list=keep)
    counts = fused_counts(m.model)
    weight_bytes = sum(len(t.raw_data) for t in m.model.graph.initializer)
    for f in made:
        (folder / f).unlink()
    fname = f"{graph}.onnx"
    big = weight_bytes > external_limit
    # Adds the com.microsoft opset import; the external data goes to <graph>.onnx.data, as export_graph's.
    m.save_model_to_file(str(folder / fname), use_external_data_format=big)
    return ([fname, f"{fname}.data"] if big else [fname]), counts
