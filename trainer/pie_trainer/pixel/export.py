"""Export of the EMA denoiser to ONNX and its check against PyTorch with ONNX Runtime."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .model import SIZE_MULTIPLE

OPSET = 17
MAX_ABS_DIFF = 1e-3
INPUTS = ("x", "t", "token")
OUTPUTS = ("eps",)


def _cpu_fp32(model: nn.Module) -> nn.Module:
    """A copy of the model on the CPU, fp32, contiguous (training may leave it channels_last)."""
    # Module.to takes memory_format (it parses its arguments like Tensor.to); its overloads do not say so.
    m = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return m.float().eval()


def graph_manifest(file: str) -> dict[str, Any]:
    """The `graphs.denoiser` entry of bundle.json (schema/README.md)."""
    return {
        "file": file,
        "inputs": [
            {"name": "x", "dtype": "float32", "shape": ["N", 3, "H", "W"]},
            {"name": "t", "dtype": "int64", "shape": ["N"]},
            {"name": "token", "dtype": "int64", "shape": ["N"]},
        ],
        "outputs": [{"name": "eps", "dtype": "float32", "shape": ["N", 3, "H", "W"]}],
    }


def export_onnx(model: nn.Module, path: Path, resolution: int) -> None:
    """Classic (TorchScript) exporter, opset 17, dynamic N, H, W; fp32 on the CPU."""
    m = _cpu_fp32(model)
    r = max(SIZE_MULTIPLE * 4, resolution)
    args = (torch.zeros(1, 3, r, r), torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m, args, str(path), dynamo=False, opset_version=OPSET,
            input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "t": {0: "N"}, "token": {0: "N"},
                          "eps": {0: "N", 2: "H", 3: "W"}},
        )


def verify_onnx(model: nn.Module, path: Path, resolution: int, vocab_size: int, threads: int, seed: int = 0) -> float:
    """Compare ONNX Runtime with PyTorch fp32 on random inputs of several shapes.

    Checks the graph's interface too. Returns the largest |difference|; raises
    RuntimeError when it is MAX_ABS_DIFF or more.
    """
    import onnxruntime as ort

    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != list(INPUTS) or names_out != list(OUTPUTS):
        raise RuntimeError(f"exported graph has inputs {names_in} and outputs {names_out}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    m = _cpu_fp32(model)
    gen = torch.Generator().manual_seed(seed)
    r = resolution
    shapes = [(2, r, r), (1, r, r + 2 * SIZE_MULTIPLE), (3, max(16, r // 2), max(16, r // 2) + SIZE_MULTIPLE)]
    worst = 0.0
    for n, h, w in shapes:
        x = torch.randn(n, 3, h, w, generator=gen)
        t = torch.randint(0, 1000, (n,), generator=gen)
        tok = torch.randint(0, vocab_size, (n,), generator=gen)
        with torch.no_grad():
            ref = m(x, t, tok).numpy()
        got = sess.run(["eps"], {"x": x.numpy(), "t": t.numpy(), "token": tok.numpy()})[0]
        if got.shape != ref.shape or got.dtype != np.float32:
            raise RuntimeError(f"ONNX output {got.shape} {got.dtype} where PyTorch gives {ref.shape} float32")
        worst = max(worst, float(np.abs(got - ref).max()))
    if not worst < MAX_ABS_DIFF:
        raise RuntimeError(f"ONNX Runtime and PyTorch disagree by {worst:.3g} (limit {MAX_ABS_DIFF})")
    return worst
