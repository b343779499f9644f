"""Seconds per Arc2Face live image on one GPU (DPM-Solver 25 steps and LCM 4 steps, batched) and IR-101 throughput.

Builds an Arc2Face-sized model with random weights (no download: the architecture, not the weights, sets the speed):
Stable Diffusion v1.5's UNet (block_out_channels 320/640/1280/1280, cross_attention_dim 768, ~860M parameters), a
CLIP ViT-L/14-sized text encoder and SD1.5's VAE, saved in Arc2Face's layout, plus a random LoRA standing in for
the LCM-LoRA (fused into the UNet at load, so it costs nothing per step). Then it times the project's own
`Arc2FaceLiveGenerator.generate()` end to end: ID conditioning, classifier-free guidance (DPM, guidance 3.0: the UNet
sees 2x the batch) or none (LCM, guidance 1.0), denoising, VAE decode and conversion to PIL images.

Each (dtype, scheduler, batch) is run once to warm up and then `--repeats` times; the table shows the fastest run.
IR-101 embedding throughput (112x112 crops, bf16, batch 256) comes from `benchmarks/gpu_live_frs.py`.

    python benchmarks/gpu_live.py                           # H100: float16 and bfloat16, batches 1,4,8,16, < 5 min
    python benchmarks/gpu_live.py --dtypes float16 --batches 1,16 --repeats 3
    python benchmarks/gpu_live.py --tiny                    # same code, tiny configs on CPU (float32), seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))


def _requests(count: int, offset: int):
    import numpy as np

    from synid_assets.core.generation.types import IdentityRecord, LiveRequest

    out = []
    for index in range(offset, offset + count):
        identity = IdentityRecord(f"bench-{index:05d}", "bench", index, index, {}, "person")
        vector = np.random.default_rng(index).normal(size=512).tolist()
        out.append(LiveRequest(identity, "", 0, 10_000 + index, f"bench/{index}.png", vector))
    return out


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_generator(generator, batch: int, repeats: int, device: str) -> float:
    """Fastest wall time of one generate() call of `batch` requests (after one warm-up call)."""
    generator.generate(_requests(batch, 0))
    best = float("inf")
    for repeat in range(repeats):
        requests = _requests(batch, (repeat + 1) * batch)
        _sync(device)
        start = time.perf_counter()
        images = generator.generate(requests)
        _sync(device)
        best = min(best, time.perf_counter() - start)
        assert len(images) == batch
    return best


def run(args: argparse.Namespace) -> int:
    import torch

    from synid_assets.core.generation.arc2face import Arc2FaceLiveGenerator
    from synid_assets.random_models.arc2face import (
        SD15_TEXT,
        SD15_UNET,
        SD15_VAE,
        TINY_TEXT,
        TINY_UNET,
        TINY_VAE,
        build_arc2face,
        save_random_lora,
    )

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # random-weight VAEs can overflow the uint8 cast
    if args.tiny:
        device, dtypes, size = "cpu", ["float32"], 32
        configs = (TINY_UNET, TINY_TEXT, TINY_VAE)
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --tiny to test this script on CPU", file=sys.stderr)
            return 2
        device, dtypes, size = "cuda", args.dtypes.split(","), args.size
        configs = (SD15_UNET, SD15_TEXT, SD15_VAE)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    batches = [int(b) for b in args.batches.split(",")]
    card = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (tiny configs)"
    print(f"device: {card}; torch {torch.__version__}", flush=True)

    started = time.perf_counter()
    results: list[tuple[str, str, int, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="synid-gpu-live-") as tmp:
        save_dtype = torch.float32 if args.tiny else torch.float16
        arc_dir, base_dir, unet = build_arc2face(Path(tmp), *configs, device=device, dtype=save_dtype)
        params = sum(p.numel() for p in unet.parameters())
        lora_dir = save_random_lora(unet, Path(tmp) / "lcm-lora", rank=4 if args.tiny else 64, std=0.01)
        del unet
        print(f"built random-weight Arc2Face ({params / 1e6:.1f}M UNet parameters) in "
              f"{time.perf_counter() - started:.1f}s", flush=True)  # fmt: skip
        for dtype in dtypes:
            for mode, steps, lora in (("dpm", args.steps, None), ("lcm", args.lcm_steps, str(lora_dir))):
                generator = Arc2FaceLiveGenerator(
                    model_id=str(arc_dir),
                    base_model_id=str(base_dir),
                    width=size,
                    height=size,
                    steps=steps,
                    lcm_lora=lora,
                    lcm_steps=steps,
                    dtype=dtype,
                    device=device,
                    batch_size=max(batches),
                )
                generator.load()
                for batch in batches:
                    seconds = time_generator(generator, batch, args.repeats, device)
                    results.append((dtype, generator.scheduler, steps, batch, seconds))
                    print(f"  {dtype} {mode} batch {batch}: {seconds:.3f}s per call", flush=True)
                generator.unload()
                del generator
                if device == "cuda":
                    torch.cuda.empty_cache()

    print()
    print(f"Arc2Face live images, {size}x{size}, {card}")
    header = f"{'dtype':<9} {'scheduler':<28} {'steps':>5} {'batch':>5} {'s/call':>8} {'s/image':>8} {'images/s':>9}"
    print(header)
    print("-" * len(header))
    for dtype, scheduler, steps, batch, seconds in results:
        print(f"{dtype:<9} {scheduler:<28} {steps:>5} {batch:>5} {seconds:>8.3f} {seconds / batch:>8.3f} "
              f"{batch / seconds:>9.2f}")  # fmt: skip
    if device == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")

    print()
    try:
        from benchmarks.gpu_live_frs import frs_throughput
    except ImportError:
        print("IR-101 throughput: skipped: gpu_live_frs not available")
    else:
        if args.tiny:
            frs = frs_throughput(device="cpu", batch=8, dtype=torch.float32, seconds=1.0, tiny=True)
        else:
            frs = frs_throughput(device="cuda", batch=256, dtype=torch.bfloat16, seconds=args.frs_seconds)
        print(f"{frs['model']} embedding, 112x112, {frs['dtype']}, batch {frs['batch']} on {frs['device']}: "
              f"{frs['images_per_second']:.0f} images/s ({frs['ms_per_batch']:.1f} ms per batch)")  # fmt: skip
    print(f"total {time.perf_counter() - started:.1f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny configs on CPU (float32): tests the script")
    parser.add_argument("--dtypes", default="float16,bfloat16", help="comma-separated (GPU runs)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 1,4,8,16; tiny 1,2)")
    parser.add_argument("--size", type=int, default=512, help="image width and height (GPU runs)")
    parser.add_argument("--steps", type=int, default=25, help="DPM-Solver steps (Arc2Face's default)")
    parser.add_argument("--lcm-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frs-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.batches is None:
        args.batches = "1,2" if args.tiny else "1,4,8,16"
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
