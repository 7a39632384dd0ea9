"""An int8 twin of the exported denoiser: static QDQ quantization of its convolutions,
calibrated on the concept's own training views, and its difference from the fp32 graph.

ONNX Runtime's CPU provider runs no bf16 convolution, but its int8 convolutions use
VNNI/AMX where the CPU has them: on a 2-core Xeon with AMX the int8 graph of the default
model ran one batch-3 evaluation at 108x104 in ~65 ms against the fp32 graph's ~115 ms
(bench/README.md). Whether it is faster is a property of the machine, so the engine times
both graphs on the machine that runs Add and keeps int8 only where it wins; whether it is
close enough is a property of the weights, so it is measured here, against the fp32 graph,
and stated in bundle.json.

Only the convolutions are quantized: quantizing the GroupNorm/SiLU/Add around them too was
slower (more quantize/dequantize pairs) and twice as far from fp32. The first and the last
convolution stay fp32 (`edge_convs`): they see the noisy image and make the predicted noise
itself, and with only 3 channels on one side they are a small part of the work; quantized,
they made 40 % of the difference (relative RMS 0.027 against 0.016 on a default-preset
subject).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .diffusion import Schedule
from .model import NULL_TOKEN

# Relative RMS difference of the predicted noise, int8 against fp32, above which no int8
# graph is written (and the engine refuses one that exceeds it at start-up). Measured: 0.012-0.013
# on the four evaluation pairs' quick bundles, 0.034 on a short default-preset subject
# (bench/README.md).
TOLERANCE = 0.05
# Calibration: this many batches of the training views, each noised to a timestep drawn up
# to T_CALIBRATION (Add's default strength 0.2 samples t <= 200; wider ranges would spend
# the 8 bits on the large activations of pure noise).
CALIBRATION_BATCHES = 16
T_CALIBRATION = 400
CHECK_BATCHES = 4


def _noised(x0: torch.Tensor, t: int, abar: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    a = float(abar[t])
    return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * torch.randn(x0.shape, generator=gen)


def add_like_feeds(views: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
                   schedule: Schedule, batches: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Inputs shaped like Add's: each of `views`' images noised to a random t, evaluated
    under its own token and the null token (Add's conditional and guidance pair)."""
    gen = torch.Generator().manual_seed(seed)
    abar = schedule.alphas_cumprod()
    feeds = []
    for _ in range(batches):
        x0, tok = views(2, gen)
        t = int(torch.randint(0, T_CALIBRATION, (1,), generator=gen))
        x = _noised(x0, t, abar, gen)
        x = torch.cat([x, x[:1]])
        token = torch.cat([tok, torch.tensor([NULL_TOKEN])])
        feeds.append({"x": x.float().numpy(), "t": np.full(3, t, np.int64), "token": token.numpy().astype(np.int64)})
    return feeds


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def edge_convs(path: Path) -> list[str]:
    """The convolutions that read the graph's input `x` or write its output `eps`."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "Conv" and ("x" in n.input or "eps" in n.output)]


def quantize(fp32: Path, int8: Path, calibration: list[dict[str, np.ndarray]],
             check: list[dict[str, np.ndarray]], threads: int, keep_fp32: list[str] | None = None,
             method: str = "MinMax") -> dict[str, Any]:
    """Writes `int8` from `fp32` and returns what bundle.json records of it.

    `rel_rms_diff` is the RMS of (eps int8 - eps fp32) over the RMS of eps fp32 on
    `check` (inputs not used for calibration); `max_abs_diff` the largest |difference|.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    started = time.perf_counter()
    keep = edge_convs(fp32) if keep_fp32 is None else keep_fp32
    # The calibrator's augmented copy of the graph goes to a temporary folder of its own.
    quantize_static(
        str(fp32), str(int8), Reader(calibration),
        quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod[method], nodes_to_exclude=keep,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    f, q = _session(fp32, threads), _session(int8, threads)
    se = sr = 0.0
    worst = 0.0
    for feed in check:
        ef = f.run(["eps"], feed)[0]
        eq = q.run(["eps"], feed)[0]
        se += float(((eq - ef) ** 2).sum())
        sr += float((ef ** 2).sum())
        worst = max(worst, float(np.abs(eq - ef).max()))
    rel = math.sqrt(se / max(sr, 1e-12))
    return {"format": "qdq", "ops": ["Conv"], "fp32": keep, "weights": "int8 per channel, symmetric",
            "activations": "uint8 per tensor", "calibration": f"{len(calibration)} batches of the training views, "
            f"t < {T_CALIBRATION}, {method}", "rel_rms_diff": round(rel, 5), "max_abs_diff": round(worst, 5),
            "tolerance": TOLERANCE, "seconds": round(time.perf_counter() - started, 2)}
