"""Images per second of an FRS embedder (IR-101, as AdaFace and CurricularFace use) on 112x112 aligned crops.

Builds the full-size IResNet-101 from `synid_assets.core.analysis.frs` with random weights (the architecture, not the
weights, sets the speed: ~65M parameters, ~12.5 GFLOPs per crop), warms it up, then runs batches for `seconds`,
synchronizing the device around the timed loop, and reports images/second. `benchmarks/gpu_live.py` imports
`frs_throughput`.

    python benchmarks/gpu_live_frs.py                    # cuda, batch 256, bfloat16, 10 s
    python benchmarks/gpu_live_frs.py --batch 512 --dtype float16 --seconds 20
    python benchmarks/gpu_live_frs.py --tiny             # same code path on CPU: a reduced IR, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synid_assets.core.analysis.frs_models import IResNetBackbone  # noqa: E402

TINY_UNITS = (1, 1, 1, 1)
TINY_CHANNELS = (16, 32, 48, 64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def frs_throughput(
    device: str = "cuda",
    batch: int = 256,
    dtype: torch.dtype = torch.bfloat16,
    seconds: float = 10,
    depth: int = 100,
    mode: str = "ir",
    warmup: int = 3,
    tiny: bool = False,
    channels_last: bool = True,
) -> dict:
    """Run `batch` x 3 x 112 x 112 crops through an IR-`depth` for about `seconds`; returns throughput and settings.

    `tiny` swaps in a reduced network (one unit per stage, narrow) for CPU smoke runs.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("frs_throughput: CUDA requested but torch.cuda.is_available() is False")
    units = TINY_UNITS if tiny else None
    chans = TINY_CHANNELS if tiny else None
    model = IResNetBackbone(depth, mode, "adaface", bn1d_affine=False, units=units, channels=chans)
    params = sum(p.numel() for p in model.parameters())
    model = model.to(dev, dtype=dtype).eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(batch, 3, 112, 112, device=dev).to(dtype).contiguous(memory_format=memory_format)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode():
        for _ in range(max(1, warmup)):
            out = model(x)
        _sync(dev)
        assert out.shape == (batch, 512)
        iters = 0
        start = time.perf_counter()
        while True:
            model(x)
            iters += 1
            if iters % 5 == 0 or dev.type != "cuda":
                _sync(dev)
                if time.perf_counter() - start >= seconds:
                    break
        _sync(dev)
        elapsed = time.perf_counter() - start
    images = iters * batch
    result = {
        "model": f"{mode.upper().replace('_', '-')}-{101 if depth == 100 else depth}" + (" (tiny)" if tiny else ""),
        "parameters": params,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev),
        "dtype": str(dtype).removeprefix("torch."),
        "batch": batch,
        "iterations": iters,
        "seconds": round(elapsed, 3),
        "images_per_second": images / elapsed,
        "ms_per_batch": 1000.0 * elapsed / iters,
    }
    if dev.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with a reduced network")
    args = parser.parse_args(argv)
    if args.tiny:
        result = frs_throughput(device="cpu", batch=4, dtype=torch.float32, seconds=1.0, warmup=1, tiny=True)
    else:
        result = frs_throughput(args.device, args.batch, getattr(torch, args.dtype), args.seconds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
