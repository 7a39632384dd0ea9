"""Seconds per image of diffusers' own Stable Diffusion loop, eager and with torch.compile.

The reference half of the GPU benchmark (bench/sd_gpu/README.md): StableDiffusionPipeline
(StableDiffusionXLPipeline for an SDXL folder) built from a local checkpoint folder
(bench/sd_gpu/checkpoint.py), DDIM, batch 1, classifier-free guidance (the UNet runs at batch 2),
fp16 with PyTorch's SDPA attention on CUDA (fp32 on a CPU).
Prints one JSON object per measured variant on stdout:

    {"variant": "diffusers-eager", "s_per_image": ..., "runs": [...], "setup_s": ...}

    python bench/sd_gpu/diffusers_loop.py CHECKPOINT [--size 512] [--steps 50] [--guidance 7.5]
        [--runs 5] [--variants eager,compiled] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def load(checkpoint: Path, device: str, dtype: Any) -> Any:  # a StableDiffusion(XL)Pipeline
    from diffusers import DDIMScheduler, DiffusionPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    index = json.loads((checkpoint / "model_index.json").read_text())
    sd1 = {} if "XL" in index.get("_class_name", "") else \
        {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    pipe = DiffusionPipeline.from_pretrained(
        str(checkpoint), dtype=dtype, local_files_only=True, low_cpu_mem_usage=False, **sd1).to(device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.unet.set_attn_processor(AttnProcessor2_0())   # SDPA, stated rather than left to the default
    pipe.set_progress_bar_config(disable=True)
    return pipe


def one_image(pipe: Any, size: int, steps: int, guidance: float, seed: int, device: str) -> float:
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    pipe(prompt="a photo of qbz dog in zwx scene", negative_prompt="", height=size, width=size,
         num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="np")
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(pipe: Any, variant: str, args: argparse.Namespace, setup_s: float) -> dict[str, Any]:
    first = one_image(pipe, args.size, args.steps, args.guidance, 0, args.device)   # warm-up / compilation
    runs = [one_image(pipe, args.size, args.steps, args.guidance, i + 1, args.device) for i in range(args.runs)]
    return {"variant": variant, "s_per_image": statistics.median(runs), "runs": runs, "first_image_s": first,
            "setup_s": setup_s, "size": args.size, "steps": args.steps, "guidance": args.guidance,
            "device": args.device, "dtype": str(pipe.unet.dtype).replace("torch.", "")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path, help="a local diffusers-layout Stable Diffusion folder")
    ap.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    ap.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    ap.add_argument("--runs", type=int, default=5, help="timed images after one warm-up image (default 5)")
    ap.add_argument("--variants", default="eager,compiled",
                    help="comma-separated: eager, compiled (torch.compile mode=reduce-overhead on the UNet)")
    ap.add_argument("--device", default=None, help="cuda when available, else cpu")
    args = ap.parse_args(argv)

    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(variants) - {"eager", "compiled"}
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(sorted(unknown))}: use eager and/or compiled")
    torch.backends.cuda.matmul.allow_tf32 = True
    for variant in variants:
        t0 = time.perf_counter()
        pipe = load(args.checkpoint, args.device, dtype)
        if variant == "compiled":
            pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)
        setup_s = time.perf_counter() - t0
        result = measure(pipe, "diffusers-" + variant, args, setup_s)
        if variant == "compiled":
            result["compile_s"] = result["first_image_s"] - result["s_per_image"]
        print(json.dumps(result), flush=True)
        del pipe
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
