"""Export of the fine-tuned model to the four ONNX graphs of an sd bundle, and their
check against PyTorch with ONNX Runtime (schema/README.md, "Backbone sd").

| graph | inputs | outputs |
|---|---|---|
| text_encoder | input_ids[N,L] int64 | last_hidden_state[N,L,D] float32 |
| unet | sample[N,C,h,w], timestep[N] int64, encoder_hidden_states[N,L,D] | noise_pred[N,4,h,w] |
| vae_encoder | image[N,3,H,W] | latent[N,4,h,w] (posterior mean x scaling_factor) |
| vae_decoder | latent[N,4,h,w] | image[N,3,H,W] (latent / scaling_factor first) |

Classic exporter (`dynamo=False`), opset 17, dynamic N, h, w (L fixed at the
tokenizer's max_length). With fp16 the weights are half precision and the
wrappers cast inputs in and outputs out, so every graph input and output stays
float32 (int64 for ids and timesteps). A graph whose weights pass 2 GB keeps
them in one external-data file `<graph>.onnx.data` beside it.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

OPSET = 17
EXTERNAL_LIMIT = 1_800_000_000   # bytes of weights above which a graph keeps them in <graph>.onnx.data
GRAPHS = ("text_encoder", "unet", "vae_encoder", "vae_decoder")


# The wrapped models are transformers' and diffusers' (typed as Any: mypy.ini does not follow them).
class TextEncoder(nn.Module):
    def __init__(self, te: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.te, self.dtype = te, dtype

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.te(input_ids=input_ids, return_dict=True).last_hidden_state.float()


class UNet(nn.Module):
    def __init__(self, unet: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.unet, self.dtype = unet, dtype

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.unet(sample.to(self.dtype), timestep, encoder_hidden_states.to(self.dtype), return_dict=False)[0]
        return out.float()


class VaeEncoder(nn.Module):
    def __init__(self, vae: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.vae, self.dtype = vae, dtype
        self.scale = float(vae.config.scaling_factor)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.vae.encoder(image.to(self.dtype))
        if self.vae.quant_conv is not None:
            h = self.vae.quant_conv(h)
        mean = h[:, : h.shape[1] // 2]
        return mean.float() * self.scale


class VaeDecoder(nn.Module):
    def __init__(self, vae: Any, dtype: torch.dtype) -> None:
        super().__init__()
        self.vae, self.dtype = vae, dtype
        self.scale = float(vae.config.scaling_factor)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((latent / self.scale).to(self.dtype), return_dict=False)[0].float()


def tensor(name: str, dtype: str, shape: list[Any]) -> dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def graphs_manifest(files: dict[str, str], L: int, D: int, C: int) -> dict[str, Any]:
    return {
        "text_encoder": {"file": files["text_encoder"], "inputs": [tensor("input_ids", "int64", ["N", L])],
                         "outputs": [tensor("last_hidden_state", "float32", ["N", L, D])]},
        "unet": {"file": files["unet"],
                 "inputs": [tensor("sample", "float32", ["N", C, "h", "w"]), tensor("timestep", "int64", ["N"]),
                            tensor("encoder_hidden_states", "float32", ["N", L, D])],
                 "outputs": [tensor("noise_pred", "float32", ["N", 4, "h", "w"])]},
        "vae_encoder": {"file": files["vae_encoder"], "inputs": [tensor("image", "float32", ["N", 3, "H", "W"])],
                        "outputs": [tensor("latent", "float32", ["N", 4, "h", "w"])]},
        "vae_decoder": {"file": files["vae_decoder"], "inputs": [tensor("latent", "float32", ["N", 4, "h", "w"])],
                        "outputs": [tensor("image", "float32", ["N", 3, "H", "W"])]},
    }


def _spec(name: str, parts: Any, L: int, size_multiple: int, vsf: int, device: torch.device,
          dtype: torch.dtype) -> tuple[nn.Module, tuple[torch.Tensor, ...], list[str], list[str], dict[str, Any]]:
    """Wrapper module, example inputs, names and dynamic axes of one graph."""
    h = w = max(2, size_multiple // vsf) * 2
    if name == "text_encoder":
        ids = torch.zeros(1, L, dtype=torch.int64, device=device)
        return (TextEncoder(parts.text_encoder, dtype), (ids,), ["input_ids"], ["last_hidden_state"],
                {"input_ids": {0: "N"}, "last_hidden_state": {0: "N"}})
    if name == "unet":
        C = int(parts.unet.config.in_channels)
        D = int(parts.unet.config.cross_attention_dim)
        args = (torch.zeros(1, C, h, w, device=device), torch.zeros(1, dtype=torch.int64, device=device),
                torch.zeros(1, L, D, device=device))
        return (UNet(parts.unet, dtype), args, ["sample", "timestep", "encoder_hidden_states"], ["noise_pred"],
                {"sample": {0: "N", 2: "h", 3: "w"}, "timestep": {0: "N"}, "encoder_hidden_states": {0: "N"},
                 "noise_pred": {0: "N", 2: "h", 3: "w"}})
    if name == "vae_encoder":
        return (VaeEncoder(parts.vae, dtype), (torch.zeros(1, 3, h * vsf, w * vsf, device=device),), ["image"],
                ["latent"], {"image": {0: "N", 2: "H", 3: "W"}, "latent": {0: "N", 2: "h", 3: "w"}})
    return (VaeDecoder(parts.vae, dtype), (torch.zeros(1, 4, h, w, device=device),), ["latent"], ["image"],
            {"latent": {0: "N", 2: "h", 3: "w"}, "image": {0: "N", 2: "H", 3: "W"}})


def export_graph(name: str, parts: Any, folder: Path, L: int, size_multiple: int, vsf: int,
                 device: torch.device, dtype: torch.dtype) -> list[str]:
    """Export one graph into `folder`; returns the bundle files it made (graph, and its .data when large)."""
    return export_module(name, *_spec(name, parts, L, size_multiple, vsf, device, dtype), folder)


def export_module(name: str, module: nn.Module, args: tuple[torch.Tensor, ...], ins: list[str], outs: list[str],
                  axes: dict[str, Any], folder: Path) -> list[str]:
    """Export `module` as the graph `name` (`<name>.onnx`, and `<name>.onnx.data` when its weights are large)."""
    import onnx

    module.eval()
    tmp = folder / f"tmp-export-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        raw = tmp / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(raw), dynamo=False, opset_version=OPSET, input_names=ins,
                              output_names=outs, dynamic_axes=axes, do_constant_folding=True)
        proto = onnx.load(str(raw), load_external_data=True)
        weight_bytes = sum(len(t.raw_data) for t in proto.graph.initializer)
        fname = f"{name}.onnx"
        if weight_bytes > EXTERNAL_LIMIT:
            data = f"{fname}.data"
            onnx.save_model(proto, str(folder / fname), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data, size_threshold=1024)
            made = [fname, data]
        else:
            onnx.save_model(proto, str(folder / fname))
            made = [fname]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return made


def _session(path: Path, threads: int, providers: list[str]) -> Any:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=providers)


def verify(parts: Any, folder: Path, files: dict[str, str], L: int, size_multiple: int, vsf: int,
           threads: int, precision: str, seed: int = 0, graphs: tuple[str, ...] = GRAPHS) -> dict[str, Any]:
    """Run every graph with ONNX Runtime and compare with the fp32 PyTorch model (CPU).

    Checks names, dtypes and ranks first. fp32 graphs must agree within a
    tolerance; fp16 graphs are compared when ONNX Runtime can run them here
    (the CUDA provider, else the CPU one), with a looser tolerance (0.1 x scale: it
    catches a broken graph, not half-precision rounding), and
    otherwise only their interface is checked. Returns the worst |diff| per graph.
    """
    gen = torch.Generator().manual_seed(seed)
    vocab = int(parts.text_encoder.config.vocab_size)
    C = int(parts.unet.config.in_channels)
    D = int(parts.unet.config.cross_attention_dim)
    m = max(1, size_multiple // vsf)
    h1, w1 = 2 * m, 3 * m   # latent sizes: non-square, multiples of the UNet's down-sampling
    report: dict[str, Any] = {}
    providers = providers_for(precision)
    for name in graphs:
        path = folder / files[name]
        check_graph(path, files[name])
        if name == "text_encoder":
            ids = torch.randint(0, vocab, (2, L), generator=gen)
            feeds = {"input_ids": ids}
            ref: tuple[nn.Module, tuple[torch.Tensor, ...]] = (TextEncoder(parts.text_encoder, torch.float32), (ids,))
            out = "last_hidden_state"
        elif name == "unet":
            x = torch.randn(2, C, h1, w1, generator=gen)
            t = torch.tensor([10, 900], dtype=torch.int64)
            e = torch.randn(2, L, D, generator=gen)
            feeds = {"sample": x, "timestep": t, "encoder_hidden_states": e}
            ref = (UNet(parts.unet, torch.float32), (x, t, e))
            out = "noise_pred"
        elif name == "vae_encoder":
            img = torch.rand(1, 3, h1 * vsf, w1 * vsf, generator=gen) * 2 - 1
            feeds = {"image": img}
            ref = (VaeEncoder(parts.vae, torch.float32), (img,))
            out = "latent"
        else:
            lat = torch.randn(1, 4, h1, w1, generator=gen)
            feeds = {"latent": lat}
            ref = (VaeDecoder(parts.vae, torch.float32), (lat,))
            out = "image"
        report[name] = compare(path, files[name], ref[0], feeds, [out], threads, providers, precision)
    return report


def check_graph(path: Path, fname: str) -> None:
    """The ONNX checker, and every graph input and output float32 or int64."""
    import onnx

    onnx.checker.check_model(str(path))
    proto = onnx.load(str(path), load_external_data=False)
    for vi in list(proto.graph.input) + list(proto.graph.output):
        et = vi.type.tensor_type.elem_type
        if et not in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64):
            raise RuntimeError(f"{fname}: {vi.name} has element type {et}, not float32/int64")


def compare(path: Path, fname: str, module: nn.Module, feeds: dict[str, torch.Tensor], outs: list[str],
            threads: int, providers: list[str], precision: str) -> float | str:
    """One graph against its PyTorch module on the same inputs: the names in order, then every output
    within the tolerance (2e-3 x scale for float32, 0.1 x scale for float16); the worst |diff|."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    names_in = [i.name for i in proto.graph.input]
    names_out = [o.name for o in proto.graph.output]
    if names_in != list(feeds) or names_out != outs:
        raise RuntimeError(f"{fname} has inputs {names_in} and outputs {names_out}")
    try:
        sess = _session(path, threads, providers)
    except Exception as exc:  # noqa: BLE001 - fp16 kernels missing on this provider
        if precision == "float16":
            return f"interface only ({type(exc).__name__})"
        raise
    with torch.no_grad():
        want = module(*feeds.values())
    expected = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
    worst = 0.0
    for got, exp, oname in zip(sess.run(outs, {k: v.numpy() for k, v in feeds.items()}), expected, outs, strict=True):
        if got.shape != exp.shape or got.dtype != np.float32:
            raise RuntimeError(f"{fname}: ONNX output {oname} {got.shape} {got.dtype}, PyTorch {exp.shape} float32")
        diff = float(np.abs(got - exp).max())
        scale = max(1.0, float(np.abs(exp).max()))
        limit = (2e-3 if precision == "float32" else 1e-1) * scale
        if not diff <= limit:
            raise RuntimeError(f"{fname}: ONNX Runtime and PyTorch disagree on {oname} by {diff:.3g} "
                               f"(limit {limit:.3g})")
        worst = max(worst, diff)
    return round(worst, 8)


def providers_for(precision: str) -> list[str]:
    import onnxruntime as ort
    if precision == "float16" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
