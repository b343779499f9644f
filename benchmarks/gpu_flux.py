"""Seconds per FLUX.1-dev image (transformer denoising only) on one GPU: diffusers' defaults vs this project's settings.

Builds a FLUX.1-dev-sized FluxTransformer2DModel (12B parameters) with random weights directly on the GPU in
bfloat16 (no download: the architecture, not the weights, sets the speed) and times `--steps` denoising steps of a
1024x1024 image (4096 image tokens, 512 T5 text tokens) at each batch size:

  default   eager PyTorch, diffusers' default attention (torch SDPA), as `FluxPipeline` runs out of the box
  backend   eager, with the attention backend this script selects (`transformer.set_attention_backend`)
  compiled  the project's settings: selected attention backend + regional torch.compile of the repeated blocks
            (`compile_repeated_blocks`, `--compile-mode`), batched across identities

FLOPs are counted analytically per forward of one image (documented in `forward_flops`) and checked against a count
of every nn.Linear call made by a real forward pass; achieved TFLOP/s are compared with the card's dense bf16 peak.

    python benchmarks/gpu_flux.py                                  # H100/H200: batches 1,2,4, 20 steps, < 8 min
    python benchmarks/gpu_flux.py --batches 1,4 --modes default,compiled --steps 20
    python benchmarks/gpu_flux.py --tiny                           # same code, tiny config on CPU, seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))

from synid_assets.random_models.flux import FLUX_DEV_TRANSFORMER, TINY_TRANSFORMER, building_on  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets.
PEAKS = (("H200", 989.0), ("H100 PCIE", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0))
ATTENTION_BACKENDS = "flash,_native_cudnn,_native_flash,native"
TIMESTEP_DIM = 256  # sinusoidal timestep / guidance projection width in diffusers' FLUX embeddings


def forward_flops(config: dict, image_tokens: int, text_tokens: int) -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one transformer forward for one image.

    A matmul of an [n, k] by a [k, m] matrix is 2*n*k*m FLOPs, so every nn.Linear costs 2 * weights * tokens it
    sees: "2 * params_active * tokens". With d = heads * head_dim, S = image + text tokens:
      double-stream block (x num_layers): image side q,k,v,out (4 d^2) + MLP d->4d->d (8 d^2) on image tokens, the
        same on text tokens with the text weights: 2 * S * 12 d^2; AdaLN-Zero modulation d->6d for image and text
        on one conditioning vector: 2 * 2 * 6 d^2
      single-stream block (x num_single_layers): q,k,v (3 d^2), MLP in d->4d (4 d^2), out (d+4d)->d (5 d^2) on all S
        tokens: 2 * S * 12 d^2; modulation d->3d: 2 * 3 d^2
      embedders: x (c_in->d) on image tokens, context (joint_dim->d) on text tokens, timestep and guidance MLPs
        (256->d->d each), pooled text (pooled_dim->d->d); final AdaLN d->2d and proj_out d->c_out on image tokens
    Attention per layer (all 57 attend over the joint sequence): Q K^T and P V, each 2 * S^2 * d: 4 * S^2 * d.
    Softmax, norms, RoPE, GELU and elementwise work are left out (memory-bound, a few percent of the FLOPs).
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]
    c_in = config["in_channels"]
    c_out = config["patch_size"] ** 2 * config.get("out_channels", c_in)
    n_double, n_single = config["num_layers"], config["num_single_layers"]
    s = image_tokens + text_tokens
    linear = n_double * (2 * s * 12 * d * d + 2 * 2 * 6 * d * d)
    linear += n_single * (2 * s * 12 * d * d + 2 * 3 * d * d)
    linear += 2 * image_tokens * c_in * d + 2 * text_tokens * config["joint_attention_dim"] * d
    embed_params = (TIMESTEP_DIM * d + d * d) + (config["pooled_projection_dim"] * d + d * d)
    if config.get("guidance_embeds"):
        embed_params += TIMESTEP_DIM * d + d * d
    linear += 2 * embed_params + 2 * (d * 2 * d) + 2 * image_tokens * d * c_out
    attention = (n_double + n_single) * 4 * s * s * d
    return float(linear), float(attention)


def count_linear_flops(transformer, inputs: dict) -> float:
    """FLOPs of every nn.Linear call in one real forward (2 * in * out per row), to check forward_flops."""
    import torch

    total = [0.0]

    def hook(module, args, _output):
        rows = args[0].numel() // module.in_features
        total[0] += 2.0 * rows * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in transformer.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            transformer(**inputs, return_dict=False)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def card_peak(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    upper = device_name.upper()
    for key, peak in PEAKS:
        if key in upper:
            return peak
    return None


def build_transformer(config: dict, device: str, dtype):
    """Random weights made directly on the device in the target dtype (no fp32 copy, no host round trip)."""
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    with building_on(device, dtype):
        transformer = FluxTransformer2DModel(**config)
    return transformer.eval().requires_grad_(False)


def make_inputs(config: dict, batch: int, height: int, width: int, text_tokens: int, device: str, dtype) -> dict:
    import torch
    from diffusers import FluxPipeline

    # FLUX's VAE downsamples 8x and the transformer packs 2x2 latent patches: one token per 16x16 pixels.
    rows, cols = height // 16, width // 16
    generator = torch.Generator(device).manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(batch, rows * cols, config["in_channels"], generator=generator, device=device),
        "encoder_hidden_states": torch.randn(
            batch, text_tokens, config["joint_attention_dim"], generator=generator, device=device
        ),
        "pooled_projections": torch.randn(batch, config["pooled_projection_dim"], generator=generator, device=device),
        "timestep": torch.full((batch,), 1.0, device=device),
        "guidance": torch.full((batch,), 3.5, device=device) if config.get("guidance_embeds") else None,
        "img_ids": FluxPipeline._prepare_latent_image_ids(batch, rows, cols, device, dtype),
        "txt_ids": torch.zeros(text_tokens, 3, device=device, dtype=dtype),
    }
    return {
        k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() and k != "img_ids" else v
        for k, v in inputs.items()
    }


def denoise(transformer, inputs: dict, steps: int):
    """`steps` Euler steps of flow matching, as FluxPipeline's loop calls the transformer (sigmas 1 -> 1/steps)."""
    import torch

    latents = inputs["hidden_states"]
    sigmas = [1.0 - i / steps for i in range(steps)] + [0.0]
    with torch.inference_mode():
        for i in range(steps):
            timestep = torch.full_like(inputs["timestep"], sigmas[i])
            step_inputs = {**inputs, "hidden_states": latents, "timestep": timestep}
            noise_pred = transformer(**step_inputs, return_dict=False)[0]
            latents = latents + (sigmas[i + 1] - sigmas[i]) * noise_pred
    return latents


class Timer:
    """CUDA events on GPUs (device time, after synchronize), perf_counter on CPU."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device.startswith("cuda")
        self.torch = torch

    def __enter__(self) -> Timer:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.start = self.torch.cuda.Event(enable_timing=True)
            self.end = self.torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.end.record()
            self.torch.cuda.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000.0
        else:
            self.seconds = time.perf_counter() - self.t0


@dataclass
class Result:
    mode: str
    batch: int
    attention: str
    seconds: float | None = None  # for `steps` steps of the whole batch
    warmup_seconds: float | None = None
    peak_mem_gb: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def select_backend(transformer, candidates: list[str], probe_inputs: dict) -> tuple[str, list[str]]:
    """The first attention backend that can be set and runs a forward here; falls back to native SDPA."""
    notes = []
    if not hasattr(transformer, "set_attention_backend"):
        return "native (this diffusers has no set_attention_backend)", notes
    for name in candidates:
        try:
            transformer.set_attention_backend(name)
            with __import__("torch").inference_mode():
                transformer(**probe_inputs, return_dict=False)
            return name, notes
        except Exception as error:  # missing package, unsupported GPU/shape/dtype: try the next one
            notes.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0][:100] if str(error) else ''}")
    transformer.set_attention_backend("native")
    return "native", notes


def run(args: argparse.Namespace) -> int:
    import torch

    started = time.perf_counter()
    deadline = started + args.budget_s
    if args.tiny:
        config, device, dtype = TINY_TRANSFORMER, "cpu", torch.float32
        height = width = args.size or 128
        text_tokens = args.text_tokens or 16
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --tiny to test this script on CPU", file=sys.stderr)
            return 2
        config, device, dtype = FLUX_DEV_TRANSFORMER, "cuda", torch.bfloat16
        height = width = args.size or 1024
        text_tokens = args.text_tokens or 512
        torch.backends.cuda.matmul.allow_tf32 = True
    batches = [int(b) for b in args.batches.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = set(modes) - {"default", "backend", "compiled"}
    if unknown:
        print(f"unknown modes {sorted(unknown)}", file=sys.stderr)
        return 2

    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (tiny config)"
    peak = card_peak(device_name, args.peak_tflops)
    import diffusers

    print(f"device: {device_name}; torch {torch.__version__}; diffusers {diffusers.__version__}")
    t0 = time.perf_counter()
    transformer = build_transformer(config, device, dtype)
    params = sum(p.numel() for p in transformer.parameters())
    print(
        f"transformer: {params / 1e9:.2f}B parameters, {str(dtype).replace('torch.', '')}, "
        f"built in {time.perf_counter() - t0:.1f}s"
    )

    image_tokens = (height // 16) * (width // 16)
    linear, attention = forward_flops(config, image_tokens, text_tokens)
    probe = make_inputs(config, 1, height, width, text_tokens, device, dtype)
    counted = count_linear_flops(transformer, probe)
    agreement = abs(counted - linear) / counted
    print(
        f"{width}x{height}: {image_tokens} image + {text_tokens} text tokens; per image per step "
        f"{(linear + attention) / 1e12:.4g} TFLOP (linear {linear / 1e12:.4g} + attention {attention / 1e12:.4g}); "
        f"linear FLOPs counted from a real forward: {counted / 1e12:.4g} TFLOP "
        f"({'matches' if agreement < 1e-3 else f'off by {agreement:.2%}'})"
    )
    if agreement >= 1e-3:
        print("warning: the analytic linear FLOP formula disagrees with the counted forward", file=sys.stderr)
    flops_per_image = (linear + attention) * args.steps

    results: list[Result] = []
    selected = "native"

    def measure(mode: str, attention_name: str) -> None:
        for batch in batches:
            result = Result(mode, batch, attention_name)
            results.append(result)
            if time.perf_counter() > deadline:
                result.note = "skipped: time budget"
                continue
            inputs = make_inputs(config, batch, height, width, text_tokens, device, dtype)
            try:
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                with Timer(device) as warm:  # compiles (compiled mode) and warms kernels / allocator
                    denoise(transformer, inputs, args.warmup_steps)
                result.warmup_seconds = warm.seconds
                with Timer(device) as timed:
                    for _ in range(args.repeats):
                        denoise(transformer, inputs, args.steps)
                result.seconds = timed.seconds / args.repeats
                if device == "cuda":
                    result.peak_mem_gb = torch.cuda.max_memory_allocated() / 2**30
            except Exception as error:
                result.note = (
                    f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}"
                )
                if device == "cuda":
                    torch.cuda.empty_cache()
            print(f"  {mode:<9} batch {batch}: {describe(result, flops_per_image, peak)}", flush=True)

    if "default" in modes:
        print("mode default: eager, diffusers' default attention")
        measure("default", "native (default)")
    if "backend" in modes or "compiled" in modes:
        candidates = [b.strip() for b in args.attention_backends.split(",") if b.strip()]
        selected, notes = select_backend(transformer, candidates, probe)
        for note in notes:
            print(f"  attention backend unavailable: {note}")
        print(f"attention backend selected: {selected}")
    if "backend" in modes:
        print(f"mode backend: eager, attention {selected}")
        measure("backend", selected)
    if "compiled" in modes:
        how = "compile_repeated_blocks" if hasattr(transformer, "compile_repeated_blocks") else "compile"
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(batches))

        def compile_and_measure(attention_name: str, fullgraph: bool) -> None:
            kwargs = {"fullgraph": fullgraph, "dynamic": False, "backend": args.compile_backend}
            if args.compile_mode != "default" and args.compile_backend == "inductor":
                kwargs["mode"] = args.compile_mode
            print(
                f"mode compiled: torch.compile ({how}, backend {args.compile_backend}, mode {args.compile_mode}, "
                f"fullgraph {fullgraph}), attention {attention_name}; warm-up includes compilation per batch size"
            )
            getattr(transformer, how)(**kwargs)
            measure("compiled", attention_name)

        compile_and_measure(selected, fullgraph=True)
        if results[-len(batches)].seconds is None and not results[-len(batches)].note.startswith("skipped"):
            print("compiled run failed: retrying with native attention and graph breaks allowed")
            torch._dynamo.reset()
            if hasattr(transformer, "set_attention_backend"):
                transformer.set_attention_backend("native")
            compile_and_measure("native (fallback)", fullgraph=False)

    print_table(results, flops_per_image, peak, device_name, args, width, height)
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0 if all(r.seconds is not None for r in results if not r.note.startswith("skipped")) else 1


def describe(result: Result, flops_per_image: float, peak: float | None) -> str:
    if result.seconds is None:
        return result.note
    per_image = result.seconds / result.batch
    tflops = flops_per_image / per_image / 1e12
    text = f"{per_image:.3f} s/image, {tflops:.3g} TFLOP/s"
    if peak:
        text += f" ({100 * tflops / peak:.1f}% of peak)"
    return text + f"; warm-up {result.warmup_seconds:.1f}s"


def print_table(results, flops_per_image, peak, device_name, args, width, height) -> None:
    baseline = {r.batch: r.seconds / r.batch for r in results if r.mode == "default" and r.seconds}
    peak_text = f"{peak:.0f} TFLOP/s bf16 dense" if peak else "unknown (pass --peak-tflops)"
    print()
    print(f"FLUX.1-dev transformer, {width}x{height}, {args.steps} steps, card: {device_name}, peak {peak_text}")
    header = (
        f"{'mode':<9} {'attention':<18} {'batch':>5} {'s/image':>9} {'images/min':>10} {'TFLOP/s':>8} "
        f"{'% peak':>7} {'vs default':>10} {'warm-up s':>9} {'peak GiB':>8}  note"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r.seconds is None:
            print(
                f"{r.mode:<9} {r.attention[:18]:<18} {r.batch:>5} {'-':>9} {'-':>10} {'-':>8} {'-':>7} {'-':>10} "
                f"{'-':>9} {'-':>8}  {r.note}"
            )
            continue
        per_image = r.seconds / r.batch
        tflops = flops_per_image / per_image / 1e12
        pct = f"{100 * tflops / peak:.1f}" if peak else "n/a"
        speedup = f"{baseline[r.batch] / per_image:.2f}x" if r.batch in baseline else "n/a"
        mem = f"{r.peak_mem_gb:.1f}" if r.peak_mem_gb is not None else "n/a"
        print(
            f"{r.mode:<9} {r.attention[:18]:<18} {r.batch:>5} {per_image:>9.3f} {60 / per_image:>10.1f} "
            f"{tflops:>8.3g} {pct:>7} {speedup:>10} {r.warmup_seconds:>9.1f} {mem:>8}  {r.note}"
        )
    print(f"FLOPs per image ({args.steps} steps): {flops_per_image / 1e12:.4g} TFLOP (see forward_flops)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny config on CPU (float32): tests the script")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps timed (20; tiny: 4)")
    parser.add_argument("--modes", default="default,compiled", help="comma list of default, backend, compiled")
    parser.add_argument("--attention-backends", default=ATTENTION_BACKENDS, help="tried in order; first that works")
    parser.add_argument("--compile-mode", default="default", help="default | max-autotune-no-cudagraphs | ...")
    parser.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (inductor; --tiny: eager, a fast graph check)"
    )
    parser.add_argument("--warmup-steps", type=int, default=1, help="untimed steps per (mode, batch) first")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of --steps steps per (mode, batch)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (1024; tiny: 128)")
    parser.add_argument("--text-tokens", type=int, default=None, help="T5 tokens (512; tiny: 16)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="card's dense bf16 peak if not known")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip remaining runs after this many seconds")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 4 if args.tiny else 20
    if args.compile_backend is None:
        args.compile_backend = "eager" if args.tiny else "inductor"
    if args.tiny and args.modes == parser.get_default("modes"):
        args.modes = "default,backend,compiled"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
